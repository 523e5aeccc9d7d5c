"""Prometheus metrics: counted from the database at scrape time (so every process agrees), plus in-process ones.

Other code may record what the database does not hold, e.g. `web.metrics.record_swap("coach", 1.2, ok=True)`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy.engine import Engine

from loopbot.storage import crud

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
        counts = crud.database_counts(self.engine, latency_buckets_s=LATENCY_BUCKETS_S)
        yield _messages(counts)
        yield from _replies(counts)
        yield _latency(counts)
        yield _votes(counts)
        yield _picks(counts)
        yield _runs(counts)
        yield _live_versions(counts)
        yield from _swaps(counts)


def _messages(counts: crud.DatabaseCounts):
    m = CounterMetricFamily("loopbot_messages", "user messages received", labels=["persona"])
    for persona, n in counts.messages:
        m.add_metric([persona or ""], n)
    return m


def _replies(counts: crud.DatabaseCounts):
    replies = CounterMetricFamily("loopbot_replies", "model replies by outcome",
                                  labels=["persona", "version", "status"])
    tokens = CounterMetricFamily("loopbot_tokens", "tokens processed", labels=["persona", "version", "kind"])
    totals: dict[tuple[str, str], list[int]] = {}
    for persona, version, status, n, prompt_toks, completion_toks in counts.replies:
        replies.add_metric([persona, _version(version), status], n)
        t = totals.setdefault((persona, _version(version)), [0, 0])
        t[0] += int(prompt_toks)
        t[1] += int(completion_toks)
    for (persona, version), (p, c) in sorted(totals.items()):
        tokens.add_metric([persona, version, "prompt"], p)
        tokens.add_metric([persona, version, "completion"], c)
    return replies, tokens


def _latency(counts: crud.DatabaseCounts):
    h = HistogramMetricFamily("loopbot_reply_latency_seconds", "time from request to the last token",
                              labels=["persona"])
    for persona, n, total_ms, *le in counts.latency:
        buckets = [(str(b), int(c or 0)) for b, c in zip(LATENCY_BUCKETS_S, le, strict=False)] + [("+Inf", n)]
        h.add_metric([persona], buckets, sum_value=(total_ms or 0) / 1000)
    return h


def _votes(counts: crud.DatabaseCounts):
    m = CounterMetricFamily("loopbot_votes", "current 👍/👎 votes", labels=["persona", "version", "value"])
    for persona, version, value, n in counts.votes:
        m.add_metric([persona, _version(version), "up" if value > 0 else "down"], n)
    return m


def _picks(counts: crud.DatabaseCounts):
    m = CounterMetricFamily("loopbot_arena_picks", "side-by-side picks", labels=["persona", "source", "pick"])
    for persona, source, pick, n in counts.picks:
        m.add_metric([persona, source, pick], n)
    return m


def _runs(counts: crud.DatabaseCounts):
    m = CounterMetricFamily("loopbot_training_runs", "training cycles by outcome", labels=["persona", "status"])
    for persona, status, n in counts.runs:
        m.add_metric([persona, status], n)
    return m


def _live_versions(counts: crud.DatabaseCounts):
    g = GaugeMetricFamily("loopbot_live_version", "the active adapter version (0 = base model)", labels=["persona"])
    for persona, version in counts.live_versions:
        g.add_metric([persona], version)
    return g


def _swaps(counts: crud.DatabaseCounts):
    """Activations (promotions and rollbacks) from the audit log; swap durations where an event holds one."""
    count = CounterMetricFamily("loopbot_swaps", "adapter activations (promote or rollback)", labels=["persona"])
    hist = HistogramMetricFamily("loopbot_swap_duration_seconds", "swap durations recorded in the audit log",
                                 labels=["persona"])
    durations: dict[str, list[float]] = {}
    activations: dict[str, int] = {}
    for kind, persona, data in counts.swap_events:
        if kind == "activate":
            durations.setdefault(persona or "", [])
            activations[persona or ""] = activations.get(persona or "", 0) + 1
        seconds = (data or {}).get("duration_s")
        if kind == "swap" and isinstance(seconds, (int, float)):
            durations.setdefault(persona or "", []).append(float(seconds))
    for persona, n in sorted(activations.items()):
        count.add_metric([persona], n)
    for persona, values in sorted(durations.items()):
        if values:
            buckets = [(str(b), sum(v <= b for v in values)) for b in SWAP_BUCKETS_S] + [("+Inf", len(values))]
            hist.add_metric([persona], buckets, sum_value=sum(values))
    return count, hist


def render(engine: Engine) -> bytes:
    """The /metrics body: database counts, then this process's own counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine))
    return generate_latest(registry) + generate_latest(PROCESS_REGISTRY)
