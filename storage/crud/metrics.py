"""The counts /metrics exports, read in one transaction so they agree with each other."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Adapter, Comparison, Event, Feedback, Generation, Message, TrainingRun

__all__ = ["DatabaseCounts", "database_counts"]


@dataclass(frozen=True)
class DatabaseCounts:
    """Grouped rows; an adapter version of None is the base model."""

    messages: list[tuple]  # (persona, user messages)
    replies: list[tuple]  # (persona, version, status, replies, prompt tokens, completion tokens)
    latency: list[tuple]  # (persona, replies, total ms, replies within each bucket...)
    votes: list[tuple]  # (persona, version, value, votes)
    picks: list[tuple]  # (persona, source, pick, picks)
    runs: list[tuple]  # (persona, status, runs)
    live_versions: list[tuple]  # (persona, active version)
    swap_events: list[tuple]  # (kind "activate" or "swap", persona, data), oldest first


def database_counts(db: DB, *, latency_buckets_s: tuple[float, ...]) -> DatabaseCounts:
    """Messages, replies and tokens, reply latency per bucket (upper bounds in seconds), votes, picks, training
    runs, live versions, and the activation and swap events."""
    buckets = [func.sum(case((Generation.latency_ms <= b * 1000, 1), else_=0)) for b in latency_buckets_s]
    with transaction(db) as s:
        def rows(q) -> list[tuple]:
            return [tuple(r) for r in s.execute(q).all()]

        return DatabaseCounts(
            messages=rows(select(Message.persona, func.count()).where(Message.role == "user")
                          .group_by(Message.persona)),
            replies=rows(select(Generation.persona, Generation.adapter_version, Generation.status, func.count(),
                                func.coalesce(func.sum(Generation.prompt_tokens), 0),
                                func.coalesce(func.sum(Generation.completion_tokens), 0))
                         .group_by(Generation.persona, Generation.adapter_version, Generation.status)),
            latency=rows(select(Generation.persona, func.count(), func.sum(Generation.latency_ms), *buckets)
                         .where(Generation.latency_ms.is_not(None)).group_by(Generation.persona)),
            votes=rows(select(Generation.persona, Generation.adapter_version, Feedback.value, func.count())
                       .join(Generation, Generation.id == Feedback.generation_id)
                       .group_by(Generation.persona, Generation.adapter_version, Feedback.value)),
            picks=rows(select(Comparison.persona, Comparison.source, Comparison.pick, func.count())
                       .where(Comparison.pick.is_not(None))
                       .group_by(Comparison.persona, Comparison.source, Comparison.pick)),
            runs=rows(select(TrainingRun.persona, TrainingRun.status, func.count())
                      .group_by(TrainingRun.persona, TrainingRun.status)),
            live_versions=rows(select(Adapter.persona, Adapter.version).where(Adapter.status == "active")),
            swap_events=rows(select(Event.kind, Event.persona, Event.data)
                             .where(Event.kind.in_(["activate", "swap"])).order_by(Event.id)),
        )
