"""Prometheus metrics: counted from the database (so every process agrees), plus in-process ones.

The database counts are cached per engine for `[web] metrics_max_age_s` seconds: whatever the scrape rate, a
process counts at most once per that age, and a scrape never waits for a count except the first one (a stale
cache is served while one background thread counts afresh). Counts served are therefore at most
`metrics_max_age_s` plus one count's duration old, in every process alike (each counts from the database).
Other code may record what the database does not hold, e.g. `web.metrics.record_swap("coach", 1.2, ok=True)`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field

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


log = logging.getLogger(__name__)


@dataclass
class _Cached:
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: crud.DatabaseCounts | None = None
    counted_at: float = 0.0  # time.monotonic() when the count started
    refreshing: bool = False


_CACHES: weakref.WeakKeyDictionary[Engine, _Cached] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _count(engine: Engine) -> crud.DatabaseCounts:
    return crud.database_counts(engine, latency_buckets_s=LATENCY_BUCKETS_S)


def database_counts(engine: Engine, *, max_age_s: float, clock=time.monotonic) -> crud.DatabaseCounts:
    """The database counts for /metrics: counted now on the first call (and on every call when `max_age_s` is 0),
    else the cached ones; once they are older than `max_age_s` one background thread counts afresh while callers
    keep getting the previous counts. A failed background count is logged and tried again at the next call."""
    with _CACHES_LOCK:
        cached = _CACHES.setdefault(engine, _Cached())
    if max_age_s <= 0:
        return _count(engine)
    with cached.lock:
        if cached.counts is None:  # the first scrape counts (others wait for it under the lock)
            started = clock()
            cached.counts, cached.counted_at = _count(engine), started
            return cached.counts
        counts = cached.counts
        if clock() - cached.counted_at < max_age_s or cached.refreshing:
            return counts
        cached.refreshing = True
    threading.Thread(target=_refresh, args=(engine, cached, clock), name="loopbot-metrics-count",
                     daemon=True).start()
    return counts


def _refresh(engine: Engine, cached: _Cached, clock) -> None:
    started = clock()
    try:
        counts = _count(engine)
    except Exception:
        log.exception("/metrics: counting the database failed; the previous counts stay")
        counts = None
    with cached.lock:
        if counts is not None:
            cached.counts, cached.counted_at = counts, started
        cached.refreshing = False


def record_swap(persona: str, seconds: float, *, ok: bool) -> None:
    """Count one adapter swap of this process and its duration."""
    SWAPS.labels(persona, "ok" if ok else "failed").inc()
    SWAP_SECONDS.labels(persona).observe(seconds)


def _version(v: str | None) -> str:
    return v or "base"


class DatabaseCollector:
    """Messages, replies, latency, tokens, votes, picks, runs and swaps from the database (cached counts)."""

    def __init__(self, engine: Engine, *, max_age_s: float = 0.0):
        self.engine = engine
        self.max_age_s = max_age_s

    def collect(self):
        counts = database_counts(self.engine, max_age_s=self.max_age_s)
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


def render(engine: Engine, *, max_age_s: float = 0.0) -> bytes:
    """The /metrics body: database counts (at most `max_age_s` old, see `database_counts`), then this process's
    own counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, max_age_s=max_age_s))
    return generate_latest(registry) + generate_latest(PROCESS_REGISTRY)
