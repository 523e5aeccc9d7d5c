"""Small state that several bot processes share: replies in progress per user, the "still answering" notices
given, and the reactions each user has on each message. `shared_state(settings.shared, settings.database_url)`
gives a RedisState with `[shared] redis_url`, a PgState (loopbot/base/pg_state.py) when the database is PostgreSQL
and there is no Redis, else a MemoryState (this process only, bounded): `shared_backend` chooses.

Every entry has a time to live, so the state of a process that died goes away by itself. If Redis (or PostgreSQL)
cannot be reached, the shared state logs an error and uses its own MemoryState until it answers: the bot keeps
working, as one process would."""

from __future__ import annotations

import asyncio
import logging
import time

from loopbot.base.settings import SharedSettings
from loopbot.base.state_base import MemoryState, SharedState, describe_url

__all__ = ["MemoryState", "RedisState", "SharedState", "describe_url", "shared_backend", "shared_state"]

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.5
ERROR_LOG_EVERY_S = 60.0


def shared_backend(shared: SharedSettings | None, database_url: str = "") -> str:
    """"redis", "postgres" or "memory": `[shared] backend`, where "auto" is redis with a redis_url, else postgres
    when `database_url` is PostgreSQL, else memory (a laptop on SQLite)."""
    if shared is None:
        return "memory"
    postgres = database_url.startswith("postgresql")
    if shared.backend == "auto":
        return "redis" if shared.redis_url else "postgres" if postgres else "memory"
    if shared.backend == "postgres" and not postgres:
        raise ValueError(f"[shared] backend = \"postgres\" needs a PostgreSQL storage.url, not {database_url!r}")
    return shared.backend


def shared_state(shared: SharedSettings | None, database_url: str = "", *, max_keys: int = 10_000) -> SharedState:
    """Shared through Redis or PostgreSQL (`shared_backend`), else memory (at most `max_keys` keys per name, the
    oldest dropped)."""
    backend = shared_backend(shared, database_url)
    if backend == "redis":
        return RedisState(shared.redis_url, max_keys=max_keys, key_prefix=f"{shared.key_prefix}:st")
    if backend == "postgres":
        from loopbot.base.pg_state import PgState  # here: a laptop never imports it

        return PgState(database_url, max_keys=max_keys, key_prefix=f"{shared.key_prefix}:st")
    return MemoryState(max_keys=max_keys)


# One round trip each, atomic: two processes cannot both take the last slot or both see the same old list.
_ACQUIRE = """
local n = tonumber(redis.call('get', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('incr', KEYS[1])
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
"""
_RELEASE = """
local n = redis.call('decr', KEYS[1])
if n <= 0 then redis.call('del', KEYS[1]) end
return n
"""
_UPDATE_ORDERED = """
redis.call('lrem', KEYS[1], 0, ARGV[1])
if ARGV[2] == '1' then redis.call('rpush', KEYS[1], ARGV[1]) end
if redis.call('exists', KEYS[1]) == 1 then redis.call('pexpire', KEYS[1], ARGV[3]) end
return redis.call('lrange', KEYS[1], 0, -1)
"""


class RedisState(SharedState):
    """Every process with the same `url` sees the same state: keys `loopbot:st:<name>:<key>`."""

    def __init__(self, url: str, *, max_keys: int = 10_000, key_prefix: str = "loopbot:st"):
        self.url, self.key_prefix = url, key_prefix
        self.fallback = MemoryState(max_keys=max_keys)  # while Redis is down
        self._clients: dict[int, object] = {}  # per event loop: redis.asyncio connections belong to one
        self._last_error = 0.0

    def __len__(self) -> int:
        return len(self.fallback)

    async def aclose(self) -> None:
        """Close the connections of the running event loop."""
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()

    def _client(self):
        import redis.asyncio as aioredis  # here: a laptop without [shared] redis_url never imports it

        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            if len(self._clients) > 8:
                self._clients.clear()
            pool = aioredis.BlockingConnectionPool.from_url(  # a burst waits for a connection, it does not fail
                self.url, max_connections=64, timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S, decode_responses=True)
            client = self._clients[loop] = aioredis.Redis(connection_pool=pool)
        return client

    def _key(self, name: str, key: str) -> str:
        return f"{self.key_prefix}:{name}:{key}"

    async def _call(self, fallback, script: str | None, *args, command=None):
        try:
            client = self._client()
            if script is not None:
                return await client.eval(script, 1, *args)
            return await command(client)
        except Exception as e:  # redis.RedisError, OSError: down or unreachable
            now = time.monotonic()
            if not self._last_error or now - self._last_error >= ERROR_LOG_EVERY_S:
                self._last_error = now
                log.error("shared state: Redis at %s failed (%s: %s); keeping state in this process until it "
                          "answers", describe_url(self.url), type(e).__name__, e)
            return await fallback()

    async def acquire(self, name, key, limit, ttl_s):
        got = await self._call(lambda: self.fallback.acquire(name, key, limit, ttl_s), _ACQUIRE, self._key(name, key),
                               limit, int(ttl_s * 1000))
        return bool(got)

    async def release(self, name, key):
        await self._call(lambda: self.fallback.release(name, key), _RELEASE, self._key(name, key))

    async def add_once(self, name, key, ttl_s):
        k = self._key(name, key)
        got = await self._call(lambda: self.fallback.add_once(name, key, ttl_s), None,
                               command=lambda c: c.set(k, "1", nx=True, px=int(ttl_s * 1000)))
        return bool(got)

    async def discard(self, name, key):
        k = self._key(name, key)
        await self._call(lambda: self.fallback.discard(name, key), None, command=lambda c: c.delete(k))

    async def update_ordered(self, name, key, item, present, ttl_s):
        got = await self._call(lambda: self.fallback.update_ordered(name, key, item, present, ttl_s), _UPDATE_ORDERED,
                               self._key(name, key), item, "1" if present else "0", int(ttl_s * 1000))
        return tuple(got)
