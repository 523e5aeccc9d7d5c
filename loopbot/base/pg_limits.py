"""Rate limits that several processes share through the PostgreSQL database when there is no Redis: a sliding
window kept as one row per counted event in `shared_hits` (loopbot/base/pg_store.py), with the in-memory
RateLimiter's methods. Built by `rate_limiter` (loopbot/base/shared_limits.py).

Counting takes a transaction-scoped advisory lock on the key, so two processes cannot both take the last slot;
the key's events older than the window are deleted as it is counted. If the database cannot be reached the
limiter logs an error (at most once a minute) and limits in this process only until it answers."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from loopbot.base.pg_store import NOW, Outage, engine, sweep
from loopbot.base.ratelimit import RateLimiter

_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:k))")
# after the lock, a statement of its own (READ COMMITTED: it sees what the last holder of the lock committed)
_COUNT = text(f"""
WITH gone AS (DELETE FROM shared_hits WHERE key = :k AND at <= {NOW} - :w),
live AS (SELECT count(*) AS n, min(at) AS first, {NOW} AS now FROM shared_hits WHERE key = :k AND at > {NOW} - :w),
counted AS (INSERT INTO shared_hits (key, at, expires) SELECT :k, now, now + :w FROM live WHERE n < :limit)
SELECT n, first, now FROM live""")
_LOOK = text(f"SELECT count(*), min(at), {NOW} FROM shared_hits WHERE key = :k AND at > {NOW} - :w")


class PgRateLimiter(RateLimiter):
    """A sliding window in PostgreSQL, keys `<key_prefix>:<kind>/<key>`. `retry_after`/`wait` block (worker
    threads: FastAPI's plain-def routes); `retry_after_async`/`wait_async` run them in a thread (the event loop)."""

    def __init__(self, url: str, kind: str, limit: int, window_s: int = 60, *, key_prefix: str = "loopbot:rl"):
        super().__init__(limit, float(window_s))  # the fallback while the database is down
        self.url, self.kind, self.key_prefix = url, kind, key_prefix
        self.outage = Outage(f"rate limit {kind}", url, "limiting in this process only until it answers")

    def retry_after(self, key: str) -> float:
        return self._ask(key, count=True)

    def wait(self, key: str) -> float:
        return self._ask(key, count=False)

    async def retry_after_async(self, key: str) -> float:
        return await asyncio.to_thread(self.retry_after, key)

    async def wait_async(self, key: str) -> float:
        return await asyncio.to_thread(self.wait, key)

    def _ask(self, key: str, *, count: bool) -> float:
        if not self.outage.skip():
            try:
                return self._in_database(f"{self.key_prefix}:{self.kind}/{key}", count)
            except Exception as e:  # sqlalchemy.exc.OperationalError, OSError: down or unreachable
                self.outage.failed(e)
        return super().retry_after(key) if count else super().wait(key)

    def _in_database(self, k: str, count: bool) -> float:
        args = {"k": k, "w": self.window_s, "limit": self.limit}
        sweep(self.url)
        with engine(self.url).begin() as conn:
            if count:
                conn.execute(_LOCK, args)
                n, first, now = conn.execute(_COUNT, args).one()
            else:
                n, first, now = conn.execute(_LOOK, args).one()
        if n < self.limit:
            return 0.0
        if first is None:  # a limit of 0: never
            return self.window_s
        return max(0.001, first + self.window_s - now)  # until the oldest counted event leaves the window
