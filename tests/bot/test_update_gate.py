"""The update gate: each update_id admitted once; a chat's updates take turns in update_id order; a dead
process's queue entry is dropped once its lease lapses."""

from __future__ import annotations

import asyncio
import random

import pytest

from loopbot.bot.update_gate import MemoryGate, RedisGate

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
async def gates(request):
    """gates(n) -> n gates of one bot: n processes (Redis), or one process n times (memory)."""
    made = []
    prefix = f"loopbot:test-gate:{random.randrange(10**9)}"

    def make(n: int):
        if request.param == "memory":
            made.append(MemoryGate())
            return made * n
        for _ in range(n):
            made.append(RedisGate.from_url(REDIS_URL, prefix, lease_s=0.3))
        return made[-n:]

    if request.param == "redis":
        probe = RedisGate.from_url(REDIS_URL, prefix)
        try:
            await probe.redis.ping()
        except Exception as e:
            pytest.skip(f"no Redis at {REDIS_URL}: {e}")
        finally:
            await probe.close()
    yield make
    for gate in {id(g): g for g in made}.values():
        if isinstance(gate, RedisGate):
            async for key in gate.redis.scan_iter(f"{prefix}:*"):
                await gate.redis.delete(key)
        await gate.close()


async def test_an_update_is_admitted_once(gates):
    a, b = gates(2)
    assert await a.admit(1, 7) and not await b.admit(1, 7) and not await a.admit(1, 7)
    assert await b.admit(2, None)
    async with a.turn(7, 1):
        pass


async def test_a_chats_updates_take_turns_in_order_across_gates(gates):
    a, b = gates(2)
    order, running = [], []
    for uid in (1, 2, 3, 4):
        assert await (a if uid % 2 else b).admit(uid, 5)
    assert await b.admit(10, 6)

    async def handle(gate, uid, chat, pause):
        async with gate.turn(chat, uid):
            running.append(uid)
            assert len([u for u in running if u < 10]) <= 1  # chat 5: one at a time
            await asyncio.sleep(pause)
            order.append(uid)
            running.remove(uid)

    # started in reverse, the first one slow: still 1, 2, 3, 4; the other chat does not wait for them
    await asyncio.gather(*(handle(a if u % 2 else b, u, 5, 0.1 if u == 1 else 0.0) for u in (4, 3, 2, 1)),
                         handle(b, 10, 6, 0.0))
    assert [u for u in order if u < 10] == [1, 2, 3, 4] and order.index(10) < order.index(1)


async def test_a_dead_processes_entry_is_dropped_after_its_lease(gates):
    a, b = gates(2)
    if a is b:
        pytest.skip("one process: nothing outlives it")
    assert await a.admit(1, 9) and await b.admit(2, 9)
    a._mine.clear()  # process a died: nobody refreshes update 1's lease
    a._refresher.cancel()
    async with asyncio.timeout(5):
        async with b.turn(9, 2):
            pass
