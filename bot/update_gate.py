"""Webhook updates handled once, and the messages of one chat handled one at a time in order, across every
process that serves one bot (several `loopbot run` behind one address).

Two parts, each with a memory form (one process) and a Redis form (`[shared] redis_url`, several processes):

* **Once**: `admit(update_id, chat)` claims the update_id (`SET key NX EX ttl`); a re-delivery (Telegram re-sends an
  update the webhook answered with an error or slowly) finds the key and is dropped. The claim is made when the
  update arrives, before the webhook answers 200: an update is handled at most once (a process killed between
  the answer and the reply loses that one message, as with PTB's own webhook).

* **In order per chat**: `admit` also appends the update to its chat's queue, a sorted set scored by update_id
  (Telegram numbers a bot's updates in the order they happened). `turn(chat, update_id)` waits until the update is
  the queue's head, i.e. every earlier update of the chat that any process admitted is done, and removes it when
  the handling ends. The head alone runs, so the queue is also the chat's lock. A process that dies leaves its
  entries behind: each entry has a lease key the owning process refreshes while it waits or handles; a waiter that
  finds the head's lease gone removes the head. Order is the arrival order at `admit` (ties by update_id):
  Telegram sends a chat's next message after the previous one, so that is the order users wrote in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)

POLL_S = 0.01  # how often a waiting update looks at its chat's queue (Redis form)
MAX_POLL_S = 0.1
LEASE_S = 30.0  # a dead process's queue entries are dropped this long after it stopped refreshing them
MAX_CONNECTIONS = 64  # Redis connections per process; a burst of deliveries waits for one
MEMORY_SEEN = 100_000  # update_ids a memory gate remembers at most


class MemoryGate:
    """One process: update_ids in a bounded dict, per-chat queues as sorted lists woken by a Condition."""

    def __init__(self, *, ttl_s: float = 86400.0, clock=time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self._seen: OrderedDict[int, float] = OrderedDict()
        self._queues: dict[int, list[int]] = {}
        self._changed = asyncio.Condition()

    async def admit(self, update_id: int, chat_id: int | None) -> bool:
        now = self.clock()
        while self._seen and (len(self._seen) > MEMORY_SEEN or next(iter(self._seen.values())) < now):
            self._seen.popitem(last=False)
        if update_id in self._seen:
            return False
        self._seen[update_id] = now + self.ttl_s
        if chat_id is not None:
            queue = self._queues.setdefault(chat_id, [])
            queue.append(update_id)
            queue.sort()
        return True

    @contextlib.asynccontextmanager
    async def turn(self, chat_id: int, update_id: int) -> AsyncIterator[None]:
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self._queues.get(chat_id, [update_id])[0] == update_id)
            yield
        finally:
            queue = self._queues.get(chat_id, [])
            with contextlib.suppress(ValueError):
                queue.remove(update_id)
            if not queue:
                self._queues.pop(chat_id, None)
            async with self._changed:
                self._changed.notify_all()

    async def close(self) -> None:
        pass


class RedisGate:
    """Several processes: keys under `prefix` (one per bot) in the Redis of `[shared] redis_url`."""

    def __init__(self, redis, prefix: str, *, ttl_s: float = 86400.0, lease_s: float = LEASE_S):
        self.redis, self.prefix, self.ttl_s, self.lease_s = redis, prefix, int(ttl_s), lease_s
        self._mine: set[int] = set()  # update_ids this process admitted and has not finished
        self._refresher: asyncio.Task | None = None

    @classmethod
    def from_url(cls, url: str, prefix: str, **kw) -> RedisGate:
        import redis.asyncio

        # a burst of webhook deliveries waits for a free connection instead of failing with "Too many connections"
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=30)
        return cls(redis.asyncio.Redis(connection_pool=pool), prefix, **kw)

    def _queue(self, chat_id: int) -> str:
        return f"{self.prefix}:chat:{chat_id}"

    def _lease(self, update_id: int | bytes) -> str:
        return f"{self.prefix}:lease:{int(update_id)}"

    async def admit(self, update_id: int, chat_id: int | None) -> bool:
        if not await self.redis.set(f"{self.prefix}:seen:{update_id}", 1, nx=True, ex=self.ttl_s):
            return False
        if chat_id is not None:
            try:
                self._mine.add(update_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.set(self._lease(update_id), 1, px=int(self.lease_s * 1000))
                    pipe.zadd(self._queue(chat_id), {str(update_id): update_id})
                    pipe.expire(self._queue(chat_id), self.ttl_s)
                    await pipe.execute()
            except BaseException:
                self._mine.discard(update_id)
                await self.redis.delete(f"{self.prefix}:seen:{update_id}")  # a re-delivery may try again
                raise
            self._refresh_leases()
        return True

    @contextlib.asynccontextmanager
    async def turn(self, chat_id: int, update_id: int) -> AsyncIterator[None]:
        queue, poll = self._queue(chat_id), POLL_S
        try:
            while True:
                head = await self.redis.zrange(queue, 0, 0)
                if not head:  # our entry was dropped (our lease lapsed, e.g. a stalled loop): queue again
                    await self.redis.zadd(queue, {str(update_id): update_id})
                    continue
                if int(head[0]) == update_id:
                    break
                if not await self.redis.exists(self._lease(head[0])):
                    log.warning("dropping update %s of chat %s: the process that took it stopped", int(head[0]),
                                chat_id)
                    await self.redis.zrem(queue, head[0])
                    continue
                await asyncio.sleep(poll)
                poll = min(poll * 1.5, MAX_POLL_S)
            yield
        finally:
            self._mine.discard(update_id)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(queue, str(update_id))
                pipe.delete(self._lease(update_id))
                await pipe.execute()

    def _refresh_leases(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="update-leases")

    async def _refresh_loop(self) -> None:
        while self._mine:
            await asyncio.sleep(self.lease_s / 3)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for update_id in list(self._mine):
                        pipe.set(self._lease(update_id), 1, px=int(self.lease_s * 1000))
                    await pipe.execute()
            except Exception as e:  # Redis away for a moment: try again at the next round
                log.warning("could not refresh the leases of %d updates: %s", len(self._mine), e)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.redis.aclose()


def make_gate(redis_url: str, prefix: str, *, ttl_s: float) -> MemoryGate | RedisGate:
    return RedisGate.from_url(redis_url, prefix, ttl_s=ttl_s) if redis_url else MemoryGate(ttl_s=ttl_s)
