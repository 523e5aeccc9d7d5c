"""The interface of the state several processes share (`SharedState`: counts, once-marks, ordered lists per name and
key) and its in-memory form (`MemoryState`: this process only, bounded), which the shared forms (RedisState in
loopbot/base/shared.py, PgState in loopbot/base/pg_state.py) also use as their fallback while their store is down."""

from __future__ import annotations

import time
from collections import OrderedDict
from urllib.parse import urlsplit


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
        """How many keys this process holds (0 when they are all in Redis or PostgreSQL)."""
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
