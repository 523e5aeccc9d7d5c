"""The web arena: choose two anonymous replies from different versions, and store a visitor's pick."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from loopbot.storage import crud
from loopbot.trainer.cleaning import scrub_pii
from loopbot.web.versions import version_label

ARENA_PLATFORM = "web"  # the user and chat that fresh arena pairs are stored under


@dataclass(frozen=True)
class Candidate:
    generation_id: int
    version: str
    text: str


@dataclass(frozen=True)
class PromptGroup:
    prompt: str
    candidates: list[Candidate]


@dataclass(frozen=True)
class Matchup:
    prompt: str
    a: Candidate
    b: Candidate


class VoteRefused(Exception):
    """A vote that was not stored; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def arena_groups(engine: Engine, *, persona: str, limit: int = 2000, chats: bool = True) -> list[PromptGroup]:
    """Recent finished replies grouped by prompt text, keeping prompts answered by at least two versions.

    Only prompts written by users whose consent and arena consent (/arena on) are on, or by the arena itself, are
    shown, with e-mail addresses and phone numbers masked as in the datasets; `chats=False` keeps only the arena's
    own fresh pairs.
    """
    rows = crud.arena_replies(engine, persona=persona, limit=limit, platform=None if chats else ARENA_PLATFORM)
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for gen_id, version, text, asked_text in rows:
        key = scrub_pii((asked_text or "").strip())
        if key:
            groups[key].append(Candidate(gen_id, version_label(version), scrub_pii(text)))
    return [PromptGroup(p, c) for p, c in groups.items() if len({x.version for x in c}) >= 2]


def choose_matchup(engine: Engine, *, persona: str, visitor_id: str, rng: random.Random | None = None,
                   chats: bool = True) -> Matchup | None:
    """A random pair of replies to one prompt from two different versions that this visitor has not judged."""
    rng = rng or random.Random()
    seen = crud.voted_pairs(engine, visitor_id=visitor_id)
    options: list[tuple[str, Candidate, Candidate]] = []
    for group in arena_groups(engine, persona=persona, chats=chats):
        cands = group.candidates
        for i, x in enumerate(cands):
            for y in cands[i + 1:]:
                if x.version != y.version and _key(x.generation_id, y.generation_id) not in seen:
                    options.append((group.prompt, x, y))
    if not options:
        return None
    prompt, x, y = rng.choice(options)
    if rng.random() < 0.5:
        x, y = y, x
    return Matchup(prompt, x, y)


def pair_value(persona: str, a_id: int, b_id: int, visitor_id: str) -> str:
    """What the vote form's pair signature covers: this persona, these two replies in this order, this visitor."""
    return f"{persona}:{a_id}:{b_id}:{visitor_id}"


def record_vote(engine: Engine, *, persona: str, a_id: int, b_id: int, pick: str, visitor_id: str) -> int:
    """Store the pick as a web comparison (one per visitor per pair, in either order); returns its id."""
    if pick not in crud.PICKS:
        raise VoteRefused(400, f"a pick is one of {', '.join(crud.PICKS)}, got {pick[:20]!r}")
    a, b = crud.get_generation(engine, generation_id=a_id), crud.get_generation(engine, generation_id=b_id)
    if a is None or b is None or a.persona != persona or b.persona != persona or a_id == b_id:
        raise VoteRefused(400, "these replies are not an arena pair of this persona")
    if _key(a_id, b_id) in crud.voted_pairs(engine, visitor_id=visitor_id):
        raise VoteRefused(409, "you already voted on this pair")
    # stored in the order shown (position bias stays measurable); the check above covers the other order,
    # the database's unique key a concurrent replay of this one
    comparison_id = crud.record_web_pick(engine, persona=persona, generation_a_id=a_id, generation_b_id=b_id,
                                         visitor_id=visitor_id, pick=pick)
    if comparison_id is None:
        raise VoteRefused(409, "you already voted on this pair")
    return comparison_id


def reveal(engine: Engine, *, comparison_id: int, visitor_id: str) -> dict | None:
    """After a vote: which version wrote which reply (only for the visitor who voted)."""
    row = crud.get_comparison(engine, comparison_id=comparison_id)
    if row is None or row.visitor_id != visitor_id:
        return None
    a = crud.get_generation(engine, generation_id=row.generation_a_id)
    b = crud.get_generation(engine, generation_id=row.generation_b_id)
    return {"pick": row.pick, "a": a.adapter_version or "base", "b": b.adapter_version or "base"}


def _key(x: int, y: int) -> tuple[int, int]:
    return (min(x, y), max(x, y))
