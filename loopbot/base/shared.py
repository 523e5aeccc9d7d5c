"""Small state that several bot processes share: replies in progress per user, the "still answering" notices
given, and the reactions each user has on each message. `shared_state(settings.shared)` gives a RedisState when
`[shared] redis_url` is set (every process sees the same), else a MemoryState (this process only, bounded).

Every entry has a time to live in Redis, so the state of a process that died goes away by itself. If Redis cannot
be reached, a RedisState logs an error and uses its own MemoryState until Redis answers: the bot keeps working,
as one process would."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from loopbot.base.settings import SharedSettings

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.5
ERROR_LOG_EVERY_S = 60.0


def shared_state(shared: SharedSettings | None, *, max_keys: int = 10_000) -> SharedState:
    """Redis when `shared.redis_url` is set, else memory (at most `max_keys` keys per name, the oldest dropped)."""
    if shared is None or not shared.redis_url:
        return MemoryState(max_keys=max_keys)
    return RedisState(shared.redis_url, max_keys=max_keys, key_prefix=f"{shared.key_prefix}:st")


def describe_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class SharedState:
    """Named maps of small values (`name` is the kind, e.g. "busy"; `key` the user or message)."""

    async def acquire(self, name: str, key: str, limit: int, ttl_s: float) -> bool:
        """Take one of `limit` slots of `key` (False: all taken). Each `acquire` that returned True needs a
        `release`; slots not released within `ttl_s` of the last acquire go away."""
        raise NotImplementedError

    def __len__(self) -> int:
        """How many keys this process holds (0 when they are all in Redis)."""
        return 0

    async def release(self, name: str, key: str) -> None:
        raise NotImplementedError

    async def add_once(self, name: str, key: str, ttl_s: float) -> bool:
        """Mark `key` (True if it was not marked already)."""
        raise NotImplementedError

    async def discard(self, name: str, key: str) -> None:
        raise NotImplementedError

    async def update_ordered(self, name: str, key: str, item: str, present: bool, ttl_s: float) -> tuple[str, ...]:
        """Move `item` to the end of `key`'s list (present) or remove it (not present); the list after, in one step."""
        raise NotImplementedError


class MemoryState(SharedState):
    """This process only; at most `max_keys` keys per name (the least recently changed dropped first)."""

    def __init__(self, *, max_keys: int = 10_000, clock=time.monotonic):
        self.max_keys, self.clock = max_keys, clock
        self._maps: dict[str, OrderedDict[str, tuple[object, float]]] = {}  # name -> key -> (value, expires)

    def _map(self, name: str) -> OrderedDict[str, tuple[object, float]]:
        return self._maps.setdefault(name, OrderedDict())

    def _get(self, name: str, key: str, default=None):
        value, expires = self._map(name).get(key, (default, 0.0))
        return value if expires > self.clock() else default

    def _set(self, name: str, key: str, value, ttl_s: float) -> None:
        m = self._map(name)
        m[key] = (value, self.clock() + ttl_s)
        m.move_to_end(key)
        while len(m) > self.max_keys:
            m.popitem(last=False)

    def _drop(self, name: str, key: str) -> None:
        self._map(name).pop(key, None)

    def __len__(self) -> int:
        """How many keys it remembers now, all names together."""
        return sum(len(m) for m in self._maps.values())

    async def acquire(self, name, key, limit, ttl_s):
        taken = self._get(name, key, 0)
        if taken >= limit:
            return False
        self._set(name, key, taken + 1, ttl_s)
        return True

    async def release(self, name, key):
        taken = self._get(name, key, 0)
        if taken > 1:
            m = self._map(name)
            m[key] = (taken - 1, m[key][1])
        else:
            self._drop(name, key)

    async def add_once(self, name, key, ttl_s):
        if self._get(name, key):
            return False
        self._set(name, key, True, ttl_s)
        return True

    async def discard(self, name, key):
        self._drop(name, key)

    async def update_ordered(self, name, key, item, present, ttl_s):
        items = tuple(i for i in self._get(name, key, ()) if i != item) + ((item,) if present else ())
        if items:
            self._set(name, key, items, ttl_s)
        else:
            self._drop(name, key)
        return items


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
