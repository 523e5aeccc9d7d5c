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


SLICE = 12  # replies per version read for one page's pair
VERSIONS_PER_TRY = 4  # versions of one prompt looked at per try
TRIES = 3  # prompts tried per page before saying there is nothing left


def choose_matchup(engine: Engine, *, persona: str, visitor_id: str, rng: random.Random | None = None,
                   chats: bool = True) -> Matchup | None:
    """A random pair of replies to one prompt from two different versions that this visitor has not judged.

    The cost does not grow with the replies to one prompt: grouped counts choose a prompt (weighted by the pairs
    the visitor has left there), then at most SLICE replies per version (a random run of them) are read and paired.
    """
    rng = rng or random.Random()
    platform = None if chats else ARENA_PLATFORM
    prompts = [p for p in crud.arena_prompts(engine, persona=persona, visitor_id=visitor_id, platform=platform)
               if p.pairs > p.judged]
    for _ in range(TRIES):
        if not prompts:
            return None
        prompt = rng.choices(prompts, weights=[p.pairs - p.judged for p in prompts])[0]
        prompts.remove(prompt)
        matchup = _pair_in(engine, persona, prompt, visitor_id, rng, platform)
        if matchup is not None:
            return matchup
    return None


def _pair_in(engine: Engine, persona: str, prompt: crud.ArenaPrompt, visitor_id: str, rng: random.Random,
             platform: str | None) -> Matchup | None:
    keys = list(prompt.versions)
    if len(keys) > VERSIONS_PER_TRY:
        keys = rng.sample(keys, VERSIONS_PER_TRY)
    cands: list[Candidate] = []
    for key in keys:
        n, low, high = prompt.versions[key]
        offset = rng.randrange(n - SLICE + 1) if n > SLICE else 0
        for gen_id, text in crud.arena_slice(engine, persona=persona, prompt=prompt.text, version=key, low=low,
                                             high=high, offset=offset, limit=SLICE, platform=platform):
            cands.append(Candidate(gen_id, version_label(key or None), scrub_pii(text)))
    seen = crud.voted_pairs(engine, visitor_id=visitor_id, among=[c.generation_id for c in cands])
    options = [(x, y) for i, x in enumerate(cands) for y in cands[i + 1:]
               if x.version != y.version and _key(x.generation_id, y.generation_id) not in seen]
    if not options:
        return None
    x, y = rng.choice(options)
    if rng.random() < 0.5:
        x, y = y, x
    return Matchup(scrub_pii(prompt.text), x, y)  # shown as the datasets see it: no e-mail, no phone number


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


def _key(x: int, y: int) -> tuple[int, int]:
    return (min(x, y), max(x, y))
