"""Votes (👍/👎, one per user per generation) and side-by-side comparisons."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from loopbot.storage.db import DB, session_scope, transaction
from loopbot.storage.models import Comparison, Feedback, Generation, User, utcnow

__all__ = [
    "PICKS",
    "create_comparison",
    "export_feedback_since",
    "get_comparison",
    "get_vote",
    "record_pick",
    "upsert_vote",
    "vote_counts",
    "withdraw_vote",
]

PICKS = ("a", "b", "tie", "both_bad")


def upsert_vote(engine: Engine, *, generation_id: int, user_id: int, value: int, source: str = "button") -> Feedback:
    """Record a vote; a second vote by the same user on the same reply changes it, never duplicates it."""
    if value not in (1, -1):
        raise ValueError(f"a vote is +1 or -1, got {value!r}")
    for _attempt in range(3):
        try:
            with session_scope(engine) as s:
                row = s.execute(select(Feedback).where(Feedback.generation_id == generation_id,
                                                       Feedback.user_id == user_id)).scalar_one_or_none()
                if row is None:
                    row = Feedback(generation_id=generation_id, user_id=user_id, value=value, source=source)
                    s.add(row)
                else:
                    row.value, row.source, row.updated_at = value, source, utcnow()
                s.flush()
                s.refresh(row)
                return row
        except IntegrityError:
            continue  # a concurrent insert won the race: update it instead
    raise RuntimeError("could not record the vote after 3 attempts")


def withdraw_vote(db: DB, *, generation_id: int, user_id: int) -> bool:
    with transaction(db) as s:
        return s.execute(delete(Feedback).where(Feedback.generation_id == generation_id,
                                                Feedback.user_id == user_id)).rowcount > 0


def get_vote(db: DB, *, generation_id: int, user_id: int) -> int | None:
    with transaction(db) as s:
        return s.execute(select(Feedback.value).where(Feedback.generation_id == generation_id,
                                                      Feedback.user_id == user_id)).scalar_one_or_none()


def create_comparison(db: DB, *, persona: str, generation_a_id: int, generation_b_id: int,
                      user_id: int | None = None, visitor_id: str | None = None, source: str = "chat") -> Comparison:
    with transaction(db) as s:
        row = Comparison(persona=persona, generation_a_id=generation_a_id, generation_b_id=generation_b_id,
                         user_id=user_id, visitor_id=visitor_id, source=source)
        s.add(row)
        s.flush()
        s.refresh(row)
        return row


def record_pick(db: DB, *, comparison_id: int, pick: str) -> Comparison:
    """Store the pick; the unpicked candidate leaves the conversation history (a tie keeps A)."""
    if pick not in PICKS:
        raise ValueError(f"a pick is one of {', '.join(PICKS)}, got {pick!r}")
    with transaction(db) as s:
        row = s.get(Comparison, comparison_id)
        if row is None:
            raise LookupError(f"comparison {comparison_id} does not exist")
        row.pick, row.picked_at = pick, utcnow()
        if row.source == "chat":
            loser = row.generation_a_id if pick == "b" else row.generation_b_id
            winner = row.generation_b_id if pick == "b" else row.generation_a_id
            s.get(Generation, loser).in_history = False
            s.get(Generation, winner).in_history = True
        s.flush()
        s.refresh(row)
        return row


def get_comparison(db: DB, *, comparison_id: int) -> Comparison | None:
    with transaction(db) as s:
        return s.get(Comparison, comparison_id)


def export_feedback_since(db: DB, *, persona: str, after_id: int = 0, consented_only: bool = True,
                          limit: int | None = None) -> list[Feedback]:
    """Votes on this persona's replies with id > after_id, oldest first (only from consenting users by default)."""
    with transaction(db) as s:
        q = (select(Feedback).join(Generation, Generation.id == Feedback.generation_id)
             .where(Generation.persona == persona, Feedback.id > after_id).order_by(Feedback.id))
        if consented_only:
            q = q.join(User, User.id == Feedback.user_id).where(User.consent.is_(True))
        if limit:
            q = q.limit(limit)
        return list(s.execute(q).scalars())


def vote_counts(db: DB, *, persona: str, adapter_version: str | None = None,
                since_feedback_id: int = 0) -> tuple[int, int]:
    """(👍, 👎) counts for a persona, optionally for one served version."""
    with transaction(db) as s:
        q = (select(Feedback.value, func.count()).join(Generation, Generation.id == Feedback.generation_id)
             .where(Generation.persona == persona, Feedback.id > since_feedback_id).group_by(Feedback.value))
        if adapter_version is not None:
            q = q.where(Generation.adapter_version == adapter_version)
        counts = dict(s.execute(q).all())
        return counts.get(1, 0), counts.get(-1, 0)
