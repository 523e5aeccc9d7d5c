"""Who may talk to the bot, who is an admin, and the per-user limits on replies (messages per minute, concurrent)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from loopbot.base.ratelimit import RateLimiter
from loopbot.base.settings import AccessSettings, SharedSettings
from loopbot.base.shared import MemoryState, shared_backend, shared_state
from loopbot.base.shared_limits import rate_limiter

PRIVATE = "Sorry, this bot is private: you are not on its list of allowed users or chats."


class Access:
    """Allow-lists and admins from `[access]`: entries are "platform:id"; an empty list allows everyone."""

    def __init__(self, settings: AccessSettings):
        self.settings = settings

    def allows(self, platform: str, user_id: str, chat_id: str) -> bool:
        """Whether this user may use the bot in this chat: messages, commands, presses and reactions alike."""
        return self.user_allowed(platform, user_id) and self.chat_allowed(platform, chat_id)

    def user_allowed(self, platform: str, user_id: str) -> bool:
        allowed = self.settings.allowed_users
        return not allowed or f"{platform}:{user_id}" in allowed or self.is_admin(platform, user_id)

    def chat_allowed(self, platform: str, chat_id: str) -> bool:
        allowed = self.settings.allowed_chats
        return not allowed or f"{platform}:{chat_id}" in allowed

    def is_admin(self, platform: str, user_id: str) -> bool:
        return f"{platform}:{user_id}" in self.settings.admins


RUNNING_TTL_S = 600.0  # a reply in progress counts at most this long (a process that died frees its users)
BUSY = "I'm still answering your previous message. Please wait for it to finish."


class ReplyLimits:
    """Per user key: at most `messages_per_minute` accepted messages in any minute and `concurrent` replies in
    progress. Users with nothing recent and nothing running are forgotten. Shared through Redis or the PostgreSQL
    database at `database_url` (`shared`, see loopbot/base/shared.py) the counts and the "still answering" notices
    are those of every process, else of this one (on `clock`)."""

    def __init__(self, messages_per_minute: int, concurrent: int, clock: Callable[[], float] = time.monotonic, *,
                 shared: SharedSettings | None = None, database_url: str = ""):
        in_memory = shared_backend(shared, database_url) == "memory"
        self.per_minute = (RateLimiter(messages_per_minute, 60.0, clock=clock) if in_memory
                           else rate_limiter(shared, "bot:messages", messages_per_minute, database_url=database_url))
        self.concurrent = concurrent
        self.state = MemoryState(clock=clock) if in_memory else shared_state(shared, database_url)

    async def refusal(self, key: str) -> str | None:
        """None if `key` may start a reply now (and counts it until `done`), else a polite message saying why not."""
        if not await self.state.acquire("running", key, self.concurrent, RUNNING_TTL_S):
            return BUSY
        wait = await self.per_minute.retry_after_async(key)
        if wait:
            await self.state.release("running", key)
            return (f"You're sending messages faster than I can answer ({self.per_minute.limit} a minute). "
                    f"Please wait about {max(1, math.ceil(wait))} s.")
        return None

    async def should_tell(self, key: str, refusal: str) -> bool:
        """Whether to show `refusal` to `key`: "still answering" once per reply in progress, not once per message
        of a flood (each message is still kept; only the notice is not repeated)."""
        if refusal != BUSY:
            return True
        return await self.state.add_once("told_busy", key, RUNNING_TTL_S)

    async def done(self, key: str) -> None:
        """The reply `refusal` let start has ended."""
        await self.state.discard("told_busy", key)
        await self.state.release("running", key)

    def __len__(self) -> int:
        """How many users it remembers now (in this process)."""
        return len(self.per_minute) + len(self.state)
