"""A throwaway PostgreSQL database for a benchmark, reached through bench/latency_proxy.py (2 ms each way), and a
check that the proxy adds what it should: the median `SELECT 1` round trip through it minus the direct one."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import create_engine, make_url, text

ADMIN_URL = os.environ.get("LOOPBOT_BENCH_POSTGRES",
                           os.environ.get("LOOPBOT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
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

    name = f"loopbot_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    direct = make_url(ADMIN_URL).set(database=name)
    try:
        engine = make_engine(direct.render_as_string(hide_password=False))
        upgrade(engine)
        engine.dispose()
        with LatencyProxy(direct.host or "127.0.0.1", direct.port or 5432, delay_ms=delay_ms) as proxy:
            url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            direct_ms = select_one_ms(direct.render_as_string(hide_password=False))
            yield Proxied(url, delay_ms, direct_ms, select_one_ms(url))
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
