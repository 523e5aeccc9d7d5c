"""Who may talk to the bot, who is an admin, and the per-user rate limit (messages per minute, concurrent replies)."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable

from loopbot.base.settings import AccessSettings


class Access:
    """Allow-lists and admins from `[access]`: entries are "platform:id"; an empty list allows everyone."""

    def __init__(self, settings: AccessSettings):
        self.settings = settings

    def user_allowed(self, platform: str, user_id: str) -> bool:
        allowed = self.settings.allowed_users
        return not allowed or f"{platform}:{user_id}" in allowed or self.is_admin(platform, user_id)

    def chat_allowed(self, platform: str, chat_id: str) -> bool:
        allowed = self.settings.allowed_chats
        return not allowed or f"{platform}:{chat_id}" in allowed

    def is_admin(self, platform: str, user_id: str) -> bool:
        return f"{platform}:{user_id}" in self.settings.admins


BUSY = "I'm still answering your previous message. Please wait for it to finish."


class RateLimiter:
    """A sliding one-minute window of accepted messages and a count of replies in progress, per user key."""

    def __init__(self, messages_per_minute: int, concurrent: int, clock: Callable[[], float] = time.monotonic):
        self.messages_per_minute = messages_per_minute
        self.concurrent = concurrent
        self.clock = clock
        self._times: dict[str, deque[float]] = defaultdict(deque)
        self._running: dict[str, int] = defaultdict(int)
        self._told_busy: set[str] = set()  # keys told "still answering" since their reply started

    def refusal(self, key: str) -> str | None:
        """None if `key` may start a reply now (and counts it), else a polite message saying why not."""
        now = self.clock()
        times = self._times[key]
        while times and now - times[0] >= 60:
            times.popleft()
        if self._running[key] >= self.concurrent:
            return BUSY
        if len(times) >= self.messages_per_minute:
            wait = max(1, math.ceil(60 - (now - times[0])))
            return (f"You're sending messages faster than I can answer ({self.messages_per_minute} a minute). "
                    f"Please wait about {wait} s.")
        times.append(now)
        self._running[key] += 1
        return None

    def should_tell(self, key: str, refusal: str) -> bool:
        """Whether to show `refusal` to `key`: "still answering" once per reply in progress, not once per message
        of a flood (each message is still kept; only the notice is not repeated)."""
        if refusal != BUSY:
            return True
        if key in self._told_busy:
            return False
        self._told_busy.add(key)
        return True

    def done(self, key: str) -> None:
        if self._running[key] > 0:
            self._running[key] -= 1
        self._told_busy.discard(key)
