"""The counts /metrics exports, read in one transaction so they agree with each other."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Adapter, Comparison, Event, Feedback, Generation, Message, TrainingRun

__all__ = ["DatabaseCounts", "database_counts", "probe_live_adapters"]

SQLITE_HEADER = b"SQLite format 3\x00"


class DatabaseError(Exception):
    """The database is there but broken."""


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
    runs, live versions, and the activation and swap events. One pass over the replies gives their counts, tokens
    and latency buckets (web/metrics.py caches the result for a bounded time)."""
    timed = Generation.latency_ms.is_not(None)
    buckets = [func.sum(case((Generation.latency_ms <= b * 1000, 1), else_=0)) for b in latency_buckets_s]
    with transaction(db) as s:
        def rows(q) -> list[tuple]:
            return [tuple(r) for r in s.execute(q).all()]

        grouped = rows(select(Generation.persona, Generation.adapter_version, Generation.status, func.count(),
                              func.coalesce(func.sum(Generation.prompt_tokens), 0),
                              func.coalesce(func.sum(Generation.completion_tokens), 0),
                              func.sum(case((timed, 1), else_=0)), func.sum(Generation.latency_ms), *buckets)
                       .group_by(Generation.persona, Generation.adapter_version, Generation.status))
        latency: dict[str, list] = {}
        for persona, _version, _status, _n, _p, _c, n_timed, total_ms, *le in grouped:
            if not n_timed:
                continue
            acc = latency.setdefault(persona, [0, 0.0] + [0] * len(latency_buckets_s))
            acc[0] += int(n_timed)
            acc[1] += float(total_ms or 0)
            for i, c in enumerate(le):
                acc[2 + i] += int(c or 0)
        return DatabaseCounts(
            messages=rows(select(Message.persona, func.count()).where(Message.role == "user")
                          .group_by(Message.persona)),
            replies=[r[:6] for r in grouped],
            latency=[(persona, *acc) for persona, acc in sorted(latency.items())],
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


def probe_live_adapters(engine: Engine, *, timeout_s: int = 5) -> list[str]:
    """The served names of the live versions, read on a new connection outside the engine's pool: a readiness probe
    (a broken SQLite file or an unreachable server fails here even while pooled connections answer from caches).
    A SQLite file must exist (the probe never creates one) and start with SQLite's header: in WAL mode a fresh
    connection may still read every page it needs from the -wal file while the main file is garbage."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            with open(url.database, "rb") as f:
                if f.read(16) != SQLITE_HEADER:
                    raise DatabaseError("the SQLite file does not start with SQLite's header")
            url = url.set(database=f"file:{url.database}", query={**url.query, "mode": "rw", "uri": "true"})
        args = {"timeout": timeout_s}
    else:
        args = {} if "connect_timeout" in url.query else {"connect_timeout": timeout_s}
    probe = create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with probe.connect() as conn:
            return list(conn.execute(select(Adapter.name).where(Adapter.status == "active")).scalars())
    finally:
        probe.dispose()
