"""The one rate limiter (chat messages per user, arena votes, admin logins): a sliding window per key that forgets
idle keys, so its memory follows the keys active in the last window, not every key ever seen."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class RateLimiter:
    """At most `limit` events per `window_s` seconds per key (sliding window, in memory, thread-safe)."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()  # least recently counted key first
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """0 if `key` may act now (and counts it), else the seconds until it may."""
        now = self.clock()
        with self._lock:
            self._forget_idle(now)
            hits = self._hits.get(key, deque())
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window_s - now if hits else self.window_s
            hits.append(now)
            self._hits[key] = hits
            self._hits.move_to_end(key)
            return 0.0

    def wait(self, key: str) -> float:
        """The seconds until `key` may act (0 = now), without counting anything: a check before an attempt whose
        outcome must not show while the key is over its limit (a guessed token)."""
        now = self.clock()
        with self._lock:
            live = [t for t in self._hits.get(key, ()) if t > now - self.window_s]
            return live[0] + self.window_s - now if len(live) >= self.limit else 0.0

    async def retry_after_async(self, key: str) -> float:
        """`retry_after` for code on the event loop (the same call here; a shared limiter awaits its store)."""
        return self.retry_after(key)

    async def wait_async(self, key: str) -> float:
        return self.wait(key)

    def __len__(self) -> int:
        """How many keys it remembers now."""
        return len(self._hits)

    def __contains__(self, key: str) -> bool:
        return key in self._hits

    def _forget_idle(self, now: float) -> None:
        """Drop keys whose last counted event left the window (the oldest first, so this is cheap per call)."""
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            if hits and hits[-1] > now - self.window_s:
                return
            del self._hits[key]
