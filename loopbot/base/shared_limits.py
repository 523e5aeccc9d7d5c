"""Rate limits that several processes share: the `limits` library's moving window in Redis, with the in-memory
RateLimiter's methods (retry_after, wait and their async forms). Built by `rate_limiter` from `[shared] redis_url`;
without one, on a PostgreSQL database, it is a PgRateLimiter (loopbot/base/pg_limits.py), else the in-memory
RateLimiter, as on a laptop.

Keys are `<[shared] key_prefix>:rl:<kind>/<key>/...` (the library appends the limit and window). If Redis cannot
be reached the limiter logs an error and falls back to this process's own in-memory limiter, so a Redis outage
neither refuses everyone nor lifts every limit: each process then limits on its own until Redis answers again."""

from __future__ import annotations

import asyncio
import logging
import time

from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from loopbot.base.ratelimit import RateLimiter
from loopbot.base.settings import SharedSettings
from loopbot.base.shared import describe_url, shared_backend

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.5  # a Redis that does not answer in this time counts as down (the fallback limits)
ERROR_LOG_EVERY_S = 60.0


def rate_limiter(shared: SharedSettings | None, kind: str, limit: int, window_s: int = 60,
                 database_url: str = "") -> RateLimiter:
    """At most `limit` events per `window_s` seconds per key, for every process of this deployment when they
    share a Redis or a PostgreSQL database (`shared_backend`; `kind` names the limit there: "web:votes:ip",
    "bot:messages"), else in memory."""
    backend = shared_backend(shared, database_url)
    if backend == "redis":
        return RedisRateLimiter(shared.redis_url, kind, limit, window_s, key_prefix=f"{shared.key_prefix}:rl")
    if backend == "postgres":
        from loopbot.base.pg_limits import PgRateLimiter  # here: a laptop never imports it

        return PgRateLimiter(database_url, kind, limit, window_s, key_prefix=f"{shared.key_prefix}:rl")
    return RateLimiter(limit, float(window_s))


class RedisRateLimiter(RateLimiter):
    """A moving window in Redis. `retry_after`/`wait` use the blocking client (for worker threads: FastAPI's plain-def
    routes and dependencies); `retry_after_async`/`wait_async` use redis.asyncio (for the event loop)."""

    def __init__(self, url: str, kind: str, limit: int, window_s: int = 60, *, key_prefix: str = "loopbot:rl"):
        super().__init__(limit, float(window_s))  # the fallback while Redis is down
        self.url, self.kind, self.key_prefix = url, kind, key_prefix
        self.item = RateLimitItemPerSecond(limit, int(window_s), namespace=kind)
        options = {"key_prefix": key_prefix, "socket_timeout": REDIS_TIMEOUT_S,
                   "socket_connect_timeout": REDIS_TIMEOUT_S}
        self._sync = MovingWindowRateLimiter(storage_from_string(url, **options))
        self._options = options
        self._async: dict[int, AsyncMovingWindow] = {}  # per event loop: redis.asyncio connections belong to one
        self._last_error = 0.0

    def retry_after(self, key: str) -> float:
        try:
            if self._sync.hit(self.item, key):
                return 0.0
            return self._seconds_left(self._sync.get_window_stats(self.item, key).reset_time)
        except Exception as e:  # redis.RedisError, OSError: down or unreachable
            self._failed(e)
            return super().retry_after(key)

    def wait(self, key: str) -> float:
        try:
            if self._sync.test(self.item, key):
                return 0.0
            return self._seconds_left(self._sync.get_window_stats(self.item, key).reset_time)
        except Exception as e:
            self._failed(e)
            return super().wait(key)

    async def retry_after_async(self, key: str) -> float:
        limiter = self._async_limiter()
        try:
            if await limiter.hit(self.item, key):
                return 0.0
            return self._seconds_left((await limiter.get_window_stats(self.item, key)).reset_time)
        except Exception as e:
            self._failed(e)
            return super().retry_after(key)

    async def wait_async(self, key: str) -> float:
        limiter = self._async_limiter()
        try:
            if await limiter.test(self.item, key):
                return 0.0
            return self._seconds_left((await limiter.get_window_stats(self.item, key)).reset_time)
        except Exception as e:
            self._failed(e)
            return super().wait(key)

    def _async_limiter(self) -> AsyncMovingWindow:
        loop = id(asyncio.get_running_loop())
        limiter = self._async.get(loop)
        if limiter is None:
            if len(self._async) > 8:  # loops come and go in tests; a server has one
                self._async.clear()
            storage = storage_from_string("async+" + self.url, implementation="redispy", **self._options)
            limiter = self._async[loop] = AsyncMovingWindow(storage)
        return limiter

    def _seconds_left(self, reset_time: float) -> float:
        """Seconds until the oldest counted event leaves the window (at least a little: the key is over its limit)."""
        return max(0.001, reset_time - time.time())

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error >= ERROR_LOG_EVERY_S or not self._last_error:
            self._last_error = now
            log.error("rate limit %s: Redis at %s failed (%s: %s); limiting in this process only until it answers",
                      self.kind, describe_url(self.url), type(error).__name__, error)
