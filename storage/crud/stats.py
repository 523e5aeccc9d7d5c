"""Counts the dashboard, the live watch and `loopbot dataset stats` read: votes per version, day and week, audit
events."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

from sqlalchemy import func, select

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Event, Feedback, Generation, User

__all__ = [
    "consent_event_counts", "consented_votes_by_week", "latest_event", "recent_events", "version_votes",
    "votes_by_day", "votes_by_version",
]


def votes_by_version(db: DB, *, persona: str) -> dict[str | None, tuple[int, int]]:
    """{adapter version (None = the base model): (👍, 👎)} over every vote on this persona's replies."""
    with transaction(db) as s:
        rows = s.execute(select(Generation.adapter_version, Feedback.value, func.count())
                         .join(Generation, Generation.id == Feedback.generation_id)
                         .where(Generation.persona == persona)
                         .group_by(Generation.adapter_version, Feedback.value)).all()
    out: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for version, value, n in rows:
        out[version][0 if value > 0 else 1] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def votes_by_day(db: DB, *, persona: str, since: datetime) -> dict[date, tuple[int, int]]:
    """{day: (👍, 👎)} of votes on this persona's replies made or changed since `since`, by the time of the vote."""
    with transaction(db) as s:
        rows = s.execute(select(Feedback.updated_at, Feedback.value)
                         .join(Generation, Generation.id == Feedback.generation_id)
                         .where(Generation.persona == persona, Feedback.updated_at >= since)).all()
    out: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for at, value in rows:
        out[at.date()][0 if value > 0 else 1] += 1
    return {d: (v[0], v[1]) for d, v in sorted(out.items())}


def consented_votes_by_week(db: DB, *, persona: str) -> list[tuple[date, int, int]]:
    """(Monday of the week, 👍, 👎) over votes by consenting users on this persona's replies, oldest week first."""
    weeks: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    q = (select(Feedback.value, Feedback.updated_at)
         .join(Generation, Generation.id == Feedback.generation_id)
         .join(User, User.id == Feedback.user_id)
         .where(Generation.persona == persona, User.consent.is_(True))
         .execution_options(yield_per=5000))
    with transaction(db) as s:
        for value, at in s.execute(q):
            weeks[date.fromordinal(at.date().toordinal() - at.weekday())][0 if value > 0 else 1] += 1
    return [(week, up, down) for week, (up, down) in sorted(weeks.items())]


def version_votes(db: DB, *, persona: str, adapter_version: str | None, after: datetime | None = None,
                  before: datetime | None = None, limit: int | None = None) -> tuple[int, int]:
    """(👍, votes) on the persona's replies served by `adapter_version` (None = the base model), among the votes
    made in [after, before), counting only the first `limit` of them."""
    served = Generation.adapter_version.is_(None) if adapter_version is None \
        else Generation.adapter_version == adapter_version
    q = (select(Feedback.value).join(Generation, Feedback.generation_id == Generation.id)
         .where(Generation.persona == persona, served))
    if after is not None:
        q = q.where(Feedback.created_at >= after)
    if before is not None:
        q = q.where(Feedback.created_at < before)
    q = q.order_by(Feedback.created_at, Feedback.id)
    if limit is not None:
        q = q.limit(limit)
    with transaction(db) as s:
        values = list(s.execute(q).scalars())
    return sum(1 for v in values if v > 0), len(values)


def consent_event_counts(db: DB) -> dict[str, int]:
    """Consent given, consent withdrawn, and forget requests, from the audit events."""
    with transaction(db) as s:
        rows = s.execute(select(Event.kind, Event.data).where(Event.kind.in_(["consent", "forget"]))).all()
    counts = {"consent_on": 0, "consent_off": 0, "forget": 0}
    for kind, data in rows:
        if kind == "forget":
            counts["forget"] += 1
        elif (data or {}).get("consent"):
            counts["consent_on"] += 1
        else:
            counts["consent_off"] += 1
    return counts


def recent_events(db: DB, *, persona: str, kinds: tuple[str, ...], limit: int = 20) -> list[Event]:
    """The persona's newest audit events of these kinds, newest first."""
    with transaction(db) as s:
        return list(s.execute(select(Event).where(Event.persona == persona, Event.kind.in_(kinds))
                              .order_by(Event.id.desc()).limit(limit)).scalars())


def latest_event(db: DB, *, kind: str, persona: str) -> Event | None:
    """The persona's newest audit event of this kind."""
    with transaction(db) as s:
        return s.execute(select(Event).where(Event.kind == kind, Event.persona == persona)
                         .order_by(Event.id.desc()).limit(1)).scalar_one_or_none()
