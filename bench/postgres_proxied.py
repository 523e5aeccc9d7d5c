"""A throwaway PostgreSQL database for a benchmark, reached through bench/latency_proxy.py (2 ms each way), and a
check that the proxy adds what it should: the median `SELECT 1` round trip through it minus the direct one."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import create_engine, make_url, text

from bench.scratch_postgres import ADMIN_URL, create_scratch_database, drop_scratch_database

DELAY_MS = 2.0


@dataclass
class Proxied:
    url: str  # through the proxy
    delay_ms: float  # each way
    direct_rtt_ms: float
    proxied_rtt_ms: float

    @property
    def added_ms(self) -> float:
        return self.proxied_rtt_ms - self.direct_rtt_ms


def select_one_ms(url: str, n: int = 50) -> float:
    """The median time of `SELECT 1` on one open connection, in ms."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            times = []
            for _ in range(n):
                start = time.perf_counter()
                conn.execute(text("SELECT 1"))
                times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)
    finally:
        engine.dispose()


@contextlib.contextmanager
def proxied_postgres(delay_ms: float = DELAY_MS) -> Iterator[Proxied]:
    """A new, migrated database; its URL through a latency proxy; dropped afterwards."""
    from bench.latency_proxy import LatencyProxy
    from loopbot.storage.db import make_engine, upgrade

    created = create_scratch_database()
    if created is None:
        raise RuntimeError(f"PostgreSQL at {ADMIN_URL} is unreachable")
    direct = make_url(created)
    try:
        engine = make_engine(direct.render_as_string(hide_password=False))
        upgrade(engine)
        engine.dispose()
        with LatencyProxy(direct.host or "127.0.0.1", direct.port or 5432, delay_ms=delay_ms) as proxy:
            url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            direct_ms = select_one_ms(direct.render_as_string(hide_password=False))
            yield Proxied(url, delay_ms, direct_ms, select_one_ms(url))
    finally:
        drop_scratch_database(created)
