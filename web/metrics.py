"""Prometheus metrics: counted from the database at scrape time (so every process agrees), plus in-process ones.

Other code may record what the database does not hold, e.g. `web.metrics.record_swap("coach", 1.2, ok=True)`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from loopbot.storage.db import session_scope
from loopbot.storage.models import Adapter, Comparison, Event, Feedback, Generation, Message, TrainingRun

LATENCY_BUCKETS_S = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SWAP_BUCKETS_S = (0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

PROCESS_REGISTRY = CollectorRegistry()
SWAPS = Counter("loopbot_process_swaps", "adapter swaps done by this process", ["persona", "outcome"],
                registry=PROCESS_REGISTRY)
SWAP_SECONDS = Histogram("loopbot_process_swap_duration_seconds", "time to load, smoke-test and flip an adapter",
                         ["persona"], buckets=SWAP_BUCKETS_S, registry=PROCESS_REGISTRY)
WEB_VOTES_REFUSED = Counter("loopbot_web_votes_refused", "arena votes refused by this process", ["reason"],
                            registry=PROCESS_REGISTRY)


def record_swap(persona: str, seconds: float, *, ok: bool) -> None:
    """Count one adapter swap of this process and its duration."""
    SWAPS.labels(persona, "ok" if ok else "failed").inc()
    SWAP_SECONDS.labels(persona).observe(seconds)


def _version(v: str | None) -> str:
    return v or "base"


class DatabaseCollector:
    """Counts messages, replies, latency, tokens, votes, picks, runs and swaps straight from the database."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        with session_scope(self.engine) as s:
            yield from self._messages(s)
            yield from self._replies(s)
            yield from self._latency(s)
            yield from self._votes(s)
            yield from self._picks(s)
            yield from self._runs(s)
            yield from self._adapters(s)
            yield from self._swaps(s)

    def _messages(self, s):
        m = CounterMetricFamily("loopbot_messages", "user messages received", labels=["persona"])
        for persona, n in s.execute(select(Message.persona, func.count()).where(Message.role == "user")
                                    .group_by(Message.persona)):
            m.add_metric([persona or ""], n)
        yield m

    def _replies(self, s):
        replies = CounterMetricFamily("loopbot_replies", "model replies by outcome",
                                      labels=["persona", "version", "status"])
        tokens = CounterMetricFamily("loopbot_tokens", "tokens processed", labels=["persona", "version", "kind"])
        rows = s.execute(select(Generation.persona, Generation.adapter_version, Generation.status, func.count(),
                                func.coalesce(func.sum(Generation.prompt_tokens), 0),
                                func.coalesce(func.sum(Generation.completion_tokens), 0))
                         .group_by(Generation.persona, Generation.adapter_version, Generation.status))
        totals: dict[tuple[str, str], list[int]] = {}
        for persona, version, status, n, prompt_toks, completion_toks in rows:
            replies.add_metric([persona, _version(version), status], n)
            t = totals.setdefault((persona, _version(version)), [0, 0])
            t[0] += int(prompt_toks)
            t[1] += int(completion_toks)
        for (persona, version), (p, c) in sorted(totals.items()):
            tokens.add_metric([persona, version, "prompt"], p)
            tokens.add_metric([persona, version, "completion"], c)
        yield replies
        yield tokens

    def _latency(self, s):
        h = HistogramMetricFamily("loopbot_reply_latency_seconds", "time from request to the last token",
                                  labels=["persona"])
        cols = [func.sum(case((Generation.latency_ms <= b * 1000, 1), else_=0)) for b in LATENCY_BUCKETS_S]
        rows = s.execute(select(Generation.persona, func.count(), func.sum(Generation.latency_ms), *cols)
                         .where(Generation.latency_ms.is_not(None)).group_by(Generation.persona))
        for persona, n, total_ms, *le in rows:
            buckets = [(str(b), int(c or 0)) for b, c in zip(LATENCY_BUCKETS_S, le)] + [("+Inf", n)]
            h.add_metric([persona], buckets, sum_value=(total_ms or 0) / 1000)
        yield h

    def _votes(self, s):
        m = CounterMetricFamily("loopbot_votes", "current 👍/👎 votes", labels=["persona", "version", "value"])
        for persona, version, value, n in s.execute(
                select(Generation.persona, Generation.adapter_version, Feedback.value, func.count())
                .join(Generation, Generation.id == Feedback.generation_id)
                .group_by(Generation.persona, Generation.adapter_version, Feedback.value)):
            m.add_metric([persona, _version(version), "up" if value > 0 else "down"], n)
        yield m

    def _picks(self, s):
        m = CounterMetricFamily("loopbot_arena_picks", "side-by-side picks", labels=["persona", "source", "pick"])
        for persona, source, pick, n in s.execute(
                select(Comparison.persona, Comparison.source, Comparison.pick, func.count())
                .where(Comparison.pick.is_not(None))
                .group_by(Comparison.persona, Comparison.source, Comparison.pick)):
            m.add_metric([persona, source, pick], n)
        yield m

    def _runs(self, s):
        m = CounterMetricFamily("loopbot_training_runs", "training cycles by outcome", labels=["persona", "status"])
        for persona, status, n in s.execute(select(TrainingRun.persona, TrainingRun.status, func.count())
                                            .group_by(TrainingRun.persona, TrainingRun.status)):
            m.add_metric([persona, status], n)
        yield m

    def _adapters(self, s):
        g = GaugeMetricFamily("loopbot_live_version", "the active adapter version (0 = base model)",
                              labels=["persona"])
        for persona, version in s.execute(select(Adapter.persona, Adapter.version).where(Adapter.status == "active")):
            g.add_metric([persona], version)
        yield g

    def _swaps(self, s):
        """Activations (promotions and rollbacks) from the audit log; swap durations where an event holds one."""
        count = CounterMetricFamily("loopbot_swaps", "adapter activations (promote or rollback)", labels=["persona"])
        hist = HistogramMetricFamily("loopbot_swap_duration_seconds", "swap durations recorded in the audit log",
                                     labels=["persona"])
        durations: dict[str, list[float]] = {}
        for kind, persona, data in s.execute(select(Event.kind, Event.persona, Event.data)
                                             .where(Event.kind.in_(["activate", "swap"]))):
            if kind == "activate":
                durations.setdefault(persona or "", [])
            seconds = (data or {}).get("duration_s")
            if kind == "swap" and isinstance(seconds, (int, float)):
                durations.setdefault(persona or "", []).append(float(seconds))
        activations: dict[str, int] = {}
        for (persona,) in s.execute(select(Event.persona).where(Event.kind == "activate")):
            activations[persona or ""] = activations.get(persona or "", 0) + 1
        for persona, n in sorted(activations.items()):
            count.add_metric([persona], n)
        for persona, values in sorted(durations.items()):
            if values:
                buckets = [(str(b), sum(v <= b for v in values)) for b in SWAP_BUCKETS_S] + [("+Inf", len(values))]
                hist.add_metric([persona], buckets, sum_value=sum(values))
        yield count
        yield hist


def render(engine: Engine) -> bytes:
    """The /metrics body: database counts, then this process's own counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine))
    return generate_latest(registry) + generate_latest(PROCESS_REGISTRY)
