"""What the web arena and the leaderboard read: replies to compare, the pairs a visitor judged, and the picks."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from loopbot.storage.crud.arena_consent import shown_on_arena
from loopbot.storage.crud.feedback import create_comparison, record_pick
from loopbot.storage.db import DB, session_scope, transaction
from loopbot.storage.models import Comparison, Generation, Message, User

__all__ = ["arena_replies", "pick_versions", "picks_stamp", "record_web_pick", "voted_pairs"]


def arena_replies(db: DB, *, persona: str, limit: int = 2000,
                  platform: str | None = None) -> list[tuple[int, str | None, str, str]]:
    """(generation id, adapter version, reply, prompt) of the persona's newest finished, non-empty replies to
    prompts by consenting users; `platform` keeps only prompts by users of that platform."""
    reply, asked = aliased(Message), aliased(Message)
    q = (select(Generation.id, Generation.adapter_version, reply.text, asked.text)
         .join(reply, reply.id == Generation.message_id)
         .join(asked, asked.id == Generation.prompt_message_id)
         .join(User, User.id == asked.user_id)
         .where(Generation.persona == persona, Generation.status.in_(["ok", "cut_off"]), reply.text != "",
                User.consent.is_(True), shown_on_arena()))
    if platform is not None:
        q = q.where(User.platform == platform)
    with transaction(db) as s:
        return [tuple(r) for r in s.execute(q.order_by(Generation.id.desc()).limit(limit)).all()]


def voted_pairs(db: DB, *, visitor_id: str) -> set[tuple[int, int]]:
    """The (smaller, larger) generation id pairs this web visitor has judged, in either order."""
    with transaction(db) as s:
        rows = s.execute(select(Comparison.generation_a_id, Comparison.generation_b_id)
                         .where(Comparison.visitor_id == visitor_id)).all()
    return {(min(a, b), max(a, b)) for a, b in rows}


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
