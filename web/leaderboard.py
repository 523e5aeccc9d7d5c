"""The leaderboard's rows: Bradley-Terry ratings with intervals, Elo, pick counts, and the live 👍 rate."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from loopbot.storage import crud
from loopbot.web.ratings import Rating, matches_from_picks, rate
from loopbot.web.versions import BASE, picks, thumbs_by_version


@dataclass(frozen=True)
class Row:
    version: str
    rating: Rating | None
    up: int
    down: int
    live: bool

    @property
    def thumbs_rate(self) -> float | None:
        return self.up / (self.up + self.down) if self.up + self.down else None


@dataclass(frozen=True)
class Board:
    persona: str
    rows: list[Row]
    ratings: list[Rating]
    comparisons: int


def build_board(engine: Engine, *, persona: str, rounds: int = 200, cache: dict | None = None) -> Board:
    """Every version's standing; the bootstrap is redone only when new picks arrived (cached per persona)."""
    key = (crud.picks_stamp(engine, persona=persona), rounds)
    if cache is not None and cache.get(persona, (None,))[0] == key:
        ratings, comparisons = cache[persona][1]
    else:
        matches = matches_from_picks(picks(engine, persona=persona))
        ratings, comparisons = rate(matches, rounds=rounds), len(matches)
        if cache is not None:
            cache[persona] = (key, (ratings, comparisons))
    thumbs = thumbs_by_version(engine, persona=persona)
    active = crud.active_adapter(engine, persona=persona)
    live = active.name if active else BASE
    by_name = {r.player: r for r in ratings}
    names = [r.player for r in ratings] + sorted(set(thumbs) - set(by_name))
    board_rows = [Row(n, by_name.get(n), *thumbs.get(n, (0, 0)), live=(n == live)) for n in names]
    return Board(persona, board_rows, ratings, comparisons)
