"""What the web arena and the leaderboard read: replies to compare, the pairs a visitor judged, and the picks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from loopbot.storage.crud.arena_consent import shown_on_arena
from loopbot.storage.crud.feedback import create_comparison, record_pick
from loopbot.storage.db import DB, session_scope, transaction
from loopbot.storage.models import Comparison, Generation, Message, User

__all__ = ["ArenaPrompt", "arena_prompts", "arena_replies", "arena_slice", "pick_versions", "picks_stamp",
           "record_web_pick", "voted_pairs"]

ARENA_WINDOW = 2000  # the arena draws from the persona's newest finished replies, at most this many


@dataclass(frozen=True)
class ArenaPrompt:
    """A prompt of the arena's window answered by two versions or more: replies per version (key "" = base), the
    cross-version pairs among them, and how many of those this visitor has judged."""

    text: str
    versions: dict[str, tuple[int, int, int]]  # version key -> (replies, lowest id, highest id)
    judged: int

    @property
    def pairs(self) -> int:
        counts = [n for n, _, _ in self.versions.values()]
        return (sum(counts) ** 2 - sum(n * n for n in counts)) // 2


def _replies(persona: str, platform: str | None):
    """(generation id, version key, reply text, prompt text) of the persona's finished, non-empty replies to
    prompts by consenting users (and only by users of `platform` if given)."""
    reply, asked = aliased(Message), aliased(Message)
    prompt = func.trim(asked.text)
    q = (select(Generation.id.label("gid"), func.coalesce(Generation.adapter_version, "").label("version"),
                reply.text.label("reply"), prompt.label("prompt"))
         .join(reply, reply.id == Generation.message_id)
         .join(asked, asked.id == Generation.prompt_message_id)
         .join(User, User.id == asked.user_id)
         .where(Generation.persona == persona, Generation.status.in_(["ok", "cut_off"]), reply.text != "",
                prompt != "", User.consent.is_(True), shown_on_arena()))
    if platform is not None:
        q = q.where(User.platform == platform)
    return q


def arena_replies(db: DB, *, persona: str, limit: int = ARENA_WINDOW,
                  platform: str | None = None) -> list[tuple[int, str | None, str, str]]:
    """(generation id, adapter version, reply, prompt) of the persona's newest finished, non-empty replies to
    prompts by consenting users; `platform` keeps only prompts by users of that platform."""
    q = _replies(persona, platform).order_by(Generation.id.desc()).limit(limit)
    with transaction(db) as s:
        return [(gid, version or None, reply, prompt) for gid, version, reply, prompt in s.execute(q).all()]


def arena_prompts(db: DB, *, persona: str, visitor_id: str, platform: str | None = None,
                  window: int = ARENA_WINDOW, limit: int = 100) -> list[ArenaPrompt]:
    """The newest `limit` prompts among the persona's newest `window` replies that two versions or more answered,
    with their reply counts per version and the visitor's judged pairs: three grouped queries whose rows and work
    do not grow with the replies to one prompt (the window bounds what the database reads)."""
    win = _replies(persona, platform).order_by(Generation.id.desc()).limit(window).subquery()
    with transaction(db) as s:
        texts = s.execute(select(win.c.prompt).group_by(win.c.prompt)
                          .having(func.count(win.c.version.distinct()) >= 2)
                          .order_by(func.max(win.c.gid).desc()).limit(limit)).scalars().all()
        if not texts:
            return []
        versions: dict[str, dict[str, tuple[int, int, int]]] = {t: {} for t in texts}
        for text_, version, n, low, high in s.execute(
                select(win.c.prompt, win.c.version, func.count(), func.min(win.c.gid), func.max(win.c.gid))
                .where(win.c.prompt.in_(texts)).group_by(win.c.prompt, win.c.version)).all():
            versions[text_][version] = (n, low, high)
        asked = aliased(Message)
        judged = dict(s.execute(
            select(func.trim(asked.text), func.count()).select_from(Comparison)
            .join(Generation, Generation.id == Comparison.pair_low)
            .join(asked, asked.id == Generation.prompt_message_id)
            .where(Comparison.visitor_id == visitor_id, func.trim(asked.text).in_(texts))
            .group_by(func.trim(asked.text))).all())
    return [ArenaPrompt(t, versions[t], judged.get(t, 0)) for t in texts]


def arena_slice(db: DB, *, persona: str, prompt: str, version: str, low: int, high: int, offset: int, limit: int,
                platform: str | None = None) -> list[tuple[int, str]]:
    """(generation id, reply) of up to `limit` replies by `version` (key "" = base) to `prompt` with ids in
    [low, high], newest first after skipping `offset`."""
    q = _replies(persona, platform).where(Generation.id.between(low, high))
    sub = q.subquery()
    q = (select(sub.c.gid, sub.c.reply).where(sub.c.prompt == prompt, sub.c.version == version)
         .order_by(sub.c.gid.desc()).offset(offset).limit(limit))
    with transaction(db) as s:
        return [tuple(r) for r in s.execute(q).all()]


def voted_pairs(db: DB, *, visitor_id: str, among: list[int] | None = None) -> set[tuple[int, int]]:
    """The (smaller, larger) generation id pairs this web visitor has judged, in either order (only pairs of two
    of `among` if given)."""
    q = select(Comparison.pair_low, Comparison.pair_high).where(Comparison.visitor_id == visitor_id)
    if among is not None:
        q = q.where(Comparison.pair_low.in_(among), Comparison.pair_high.in_(among))
    with transaction(db) as s:
        return {(a, b) for a, b in s.execute(q).all()}


def record_web_pick(engine: Engine, *, persona: str, generation_a_id: int, generation_b_id: int, visitor_id: str,
                    pick: str) -> int | None:
    """A web visitor's pick on a pair, stored in the order shown: the comparison and its pick in one transaction.
    Returns its id, or None when the visitor has a pick on this pair already (the database's unique key)."""
    try:
        with session_scope(engine) as s:
            row = create_comparison(s, persona=persona, generation_a_id=generation_a_id,
                                    generation_b_id=generation_b_id, visitor_id=visitor_id, source="web")
            record_pick(s, comparison_id=row.id, pick=pick)
            return row.id
    except IntegrityError:
        return None


def pick_versions(db: DB, *, persona: str) -> list[tuple[str | None, str | None, str]]:
    """Every picked comparison (chat and web) as (adapter version of A, of B, pick), oldest pick first."""
    ga, gb = aliased(Generation), aliased(Generation)
    with transaction(db) as s:
        return [tuple(r) for r in s.execute(select(ga.adapter_version, gb.adapter_version, Comparison.pick)
                                            .join(ga, ga.id == Comparison.generation_a_id)
                                            .join(gb, gb.id == Comparison.generation_b_id)
                                            .where(Comparison.persona == persona, Comparison.pick.is_not(None))
                                            .order_by(Comparison.picked_at, Comparison.id)).all()]


def picks_stamp(db: DB, *, persona: str) -> tuple:
    """Changes whenever a pick is added, changed or deleted (count, newest id, newest pick time)."""
    with transaction(db) as s:
        return tuple(s.execute(select(func.count(), func.max(Comparison.id), func.max(Comparison.picked_at))
                               .where(Comparison.persona == persona, Comparison.pick.is_not(None))).one())
