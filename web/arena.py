"""The web arena: choose two anonymous replies from different versions, and store a visitor's pick."""

from __future__ import annotations

import random
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
class Matchup:
    prompt: str
    a: Candidate
    b: Candidate


class VoteRefused(Exception):
    """A vote that was not stored; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


WINDOWS = ((16, False), (64, True), (256, False))  # (replies, newest?): the windows tried in turn
PARTNERS = 4  # replies of other versions read per direction (own message / other messages, after / before)


def choose_matchup(engine: Engine, *, persona: str, visitor_id: str, rng: random.Random | None = None,
                   chats: bool = True) -> Matchup | None:
    """A random pair of replies to one prompt text from two different versions that this visitor has not judged.

    Its cost does not grow with the replies stored, nor with the replies to one message: a window of 16
    consecutive replies at a random place (by id) keeps those that have an unjudged partner (one index lookup
    each), one of them is drawn, then at most 4 x PARTNERS of its partners are read and one is drawn. When that
    window holds no pair, the newest 64 replies, then 256 at another random place, are tried. With at most 64
    replies of the persona the second window holds all of them, so "nothing left" is exact; beyond that a pair
    is found when one of its two replies falls in one of the windows.
    """
    rng = rng or random.Random()
    platform = None if chats else ARENA_PLATFORM
    found = crud.arena_pair(engine, persona=persona, visitor_id=visitor_id, pick=rng.choice, partners=PARTNERS,
                            windows=[(rng.random(), size, newest) for size, newest in WINDOWS], platform=platform)
    if found is None:
        return None
    anchor, partners = found
    x, y = _candidate(anchor), _candidate(rng.choice(partners))
    if rng.random() < 0.5:
        x, y = y, x
    return Matchup(scrub_pii(anchor.prompt), x, y)  # shown as the datasets see it: no e-mail, no phone number


def _candidate(reply: crud.ArenaReply) -> Candidate:
    return Candidate(reply.generation_id, version_label(reply.version or None), scrub_pii(reply.text))


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
    # stored in the order shown (position bias stays measurable); the database's unique key on the visitor and the
    # unordered pair refuses a second pick in either order, concurrent ones included
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
