"""Read-only questions the pages and /metrics ask the database (writes go through storage.crud)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from loopbot.storage.db import session_scope
from loopbot.storage.models import Comparison, Event, Feedback, Generation, Message, User, utcnow

BASE = "base"  # how the base model (no adapter) is named on every page
ARENA_PLATFORM = "web"  # the user and chat that fresh arena pairs are stored under


def version_label(adapter_version: str | None) -> str:
    return adapter_version or BASE


@dataclass(frozen=True)
class Candidate:
    generation_id: int
    version: str
    text: str


@dataclass(frozen=True)
class PromptGroup:
    prompt: str
    candidates: list[Candidate]


def arena_groups(engine: Engine, *, persona: str, limit: int = 2000, chats: bool = True) -> list[PromptGroup]:
    """Recent finished replies grouped by prompt text, keeping prompts answered by at least two versions.

    Only prompts written by users whose consent is on (or by the arena itself) are shown; `chats=False` keeps
    only the arena's own fresh pairs.
    """
    reply, asked = aliased(Message), aliased(Message)
    with session_scope(engine) as s:
        q = (select(Generation.id, Generation.adapter_version, reply.text, asked.text)
             .join(reply, reply.id == Generation.message_id)
             .join(asked, asked.id == Generation.prompt_message_id)
             .join(User, User.id == asked.user_id)
             .where(Generation.persona == persona, Generation.status.in_(["ok", "cut_off"]), reply.text != "",
                    User.consent.is_(True)))
        if not chats:
            q = q.where(User.platform == ARENA_PLATFORM)
        rows = s.execute(q.order_by(Generation.id.desc()).limit(limit)).all()
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for gen_id, version, text, asked_text in rows:
        key = (asked_text or "").strip()
        if key:
            groups[key].append(Candidate(gen_id, version_label(version), text))
    return [PromptGroup(p, c) for p, c in groups.items() if len({x.version for x in c}) >= 2]


def voted_pairs(engine: Engine, *, visitor_id: str) -> set[tuple[int, int]]:
    with session_scope(engine) as s:
        rows = s.execute(select(Comparison.generation_a_id, Comparison.generation_b_id)
                         .where(Comparison.visitor_id == visitor_id)).all()
    return {(min(a, b), max(a, b)) for a, b in rows}


def picks(engine: Engine, *, persona: str) -> list[tuple[str, str, str]]:
    """Every picked comparison (chat and web) as (version_a, version_b, pick), oldest pick first."""
    ga, gb = aliased(Generation), aliased(Generation)
    with session_scope(engine) as s:
        rows = s.execute(select(ga.adapter_version, gb.adapter_version, Comparison.pick)
                         .join(ga, ga.id == Comparison.generation_a_id)
                         .join(gb, gb.id == Comparison.generation_b_id)
                         .where(Comparison.persona == persona, Comparison.pick.is_not(None))
                         .order_by(Comparison.picked_at, Comparison.id)).all()
    return [(version_label(a), version_label(b), p) for a, b, p in rows]


def picks_stamp(engine: Engine, *, persona: str) -> tuple:
    """Changes whenever a pick is added, changed or deleted (count, newest id, newest pick time)."""
    with session_scope(engine) as s:
        return tuple(s.execute(select(func.count(), func.max(Comparison.id), func.max(Comparison.picked_at))
                               .where(Comparison.persona == persona, Comparison.pick.is_not(None))).one())


def thumbs_by_version(engine: Engine, *, persona: str) -> dict[str, tuple[int, int]]:
    """{version: (👍, 👎)} over every vote on this persona's replies."""
    with session_scope(engine) as s:
        rows = s.execute(select(Generation.adapter_version, Feedback.value, func.count())
                         .join(Generation, Generation.id == Feedback.generation_id)
                         .where(Generation.persona == persona)
                         .group_by(Generation.adapter_version, Feedback.value)).all()
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for version, value, n in rows:
        out[version_label(version)][0 if value > 0 else 1] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def thumbs_by_day(engine: Engine, *, persona: str, days: int = 60) -> dict[date, tuple[int, int]]:
    """{day: (👍, 👎)} for the last `days` days, by the time of the vote."""
    since = utcnow() - timedelta(days=days)
    with session_scope(engine) as s:
        rows = s.execute(select(Feedback.updated_at, Feedback.value)
                         .join(Generation, Generation.id == Feedback.generation_id)
                         .where(Generation.persona == persona, Feedback.updated_at >= since)).all()
    out: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for at, value in rows:
        out[at.date()][0 if value > 0 else 1] += 1
    return {d: (v[0], v[1]) for d, v in sorted(out.items())}


def event_counts(engine: Engine) -> dict[str, int]:
    """Consent given, consent withdrawn, and forget requests, from the audit events."""
    with session_scope(engine) as s:
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


def recent_events(engine: Engine, *, persona: str, kinds: tuple[str, ...], limit: int = 20) -> list[Event]:
    with session_scope(engine) as s:
        return list(s.execute(select(Event).where(Event.persona == persona, Event.kind.in_(kinds))
                              .order_by(Event.id.desc()).limit(limit)).scalars())


def last_vote_time(engine: Engine) -> datetime | None:
    with session_scope(engine) as s:
        return s.execute(select(func.max(Feedback.updated_at))).scalar()
