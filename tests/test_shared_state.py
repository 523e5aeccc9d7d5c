"""State several processes share through Redis ([shared] redis_url): one rate-limit budget, one count of replies
in progress, one "still answering" notice, one list of reactions; memory when no Redis is configured, and this
process's own state (with a logged error) while Redis is down."""

from __future__ import annotations

import logging
import textwrap

import pytest

from loopbot.base.ratelimit import RateLimiter
from loopbot.base.settings import SharedSettings
from loopbot.base.shared import MemoryState, RedisState, shared_state
from loopbot.base.shared_limits import RedisRateLimiter, rate_limiter
from loopbot.bot.access import ReplyLimits
from tests.helpers.shared_checks import allowed_in_two_processes, check_one_reply_in_progress

DOWN = SharedSettings(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1


def test_without_a_redis_url_everything_stays_in_memory():
    assert type(rate_limiter(SharedSettings(), "web:pages", 3)) is RateLimiter
    assert type(rate_limiter(None, "web:pages", 3)) is RateLimiter
    assert isinstance(shared_state(SharedSettings()), MemoryState)


def test_two_limiters_on_one_redis_share_one_budget(shared_redis):
    first, second = (rate_limiter(shared_redis, "web:votes:ip", 3) for _ in range(2))  # as two processes have
    assert isinstance(first, RedisRateLimiter)
    assert [first.retry_after("ip:1.2.3.4") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert second.wait("ip:1.2.3.4") > 55  # over the limit: counts nothing, says how long
    wait = second.retry_after("ip:1.2.3.4")
    assert 55 < wait <= 60
    assert second.retry_after("ip:5.6.7.8") == 0.0  # other keys are not affected
    assert len(first) == 0  # nothing kept in the process


async def test_the_async_calls_share_the_budget_of_the_blocking_ones(shared_redis):
    first, second = (rate_limiter(shared_redis, "bot:messages", 2) for _ in range(2))
    assert await first.retry_after_async("telegram:7") == 0.0
    assert second.retry_after("telegram:7") == 0.0
    assert await first.wait_async("telegram:7") > 55
    assert await second.retry_after_async("telegram:7") > 55


def test_the_keys_are_namespaced_and_expire(shared_redis):
    import redis

    rate_limiter(shared_redis, "web:login", 10).retry_after("login:1.2.3.4")
    client = redis.Redis.from_url(shared_redis.redis_url)
    keys = list(client.scan_iter(f"{shared_redis.key_prefix}:*"))
    assert [k.decode() for k in keys] == [f"{shared_redis.key_prefix}:rl:web:login/login:1.2.3.4/10/60/second"]
    assert 0 < client.ttl(keys[0]) <= 60


def test_two_processes_on_one_key_get_the_limit_in_all_not_each(shared_redis):
    script = textwrap.dedent(f"""
        import asyncio, sys
        from loopbot.base.settings import SharedSettings
        from loopbot.base.shared_limits import rate_limiter
        shared = SharedSettings(redis_url={shared_redis.redis_url!r}, key_prefix={shared_redis.key_prefix!r})
        limiter = rate_limiter(shared, "bot:messages", 7)
        async def main():
            return sum([await limiter.retry_after_async("discord:42") == 0 for _ in range(10)])
        blocking = sum(limiter.retry_after("discord:42") == 0 for _ in range(5))
        print(blocking + asyncio.run(main()))
    """)
    allowed = allowed_in_two_processes(script)
    assert sum(allowed) == 7, allowed


async def test_shared_state_is_one_for_two_processes(shared_redis):
    a, b = shared_state(shared_redis), shared_state(shared_redis)
    assert isinstance(a, RedisState)
    try:
        assert await a.acquire("running", "u", 1, 60) and not await b.acquire("running", "u", 1, 60)
        await b.release("running", "u")
        assert await b.acquire("running", "u", 1, 60)
        assert await a.add_once("told_busy", "u", 60) and not await b.add_once("told_busy", "u", 60)
        await b.discard("told_busy", "u")
        assert await a.add_once("told_busy", "u", 60)
        assert await a.update_ordered("reactions", "1:2", "👍", True, 60) == ("👍",)
        assert await b.update_ordered("reactions", "1:2", "👎", True, 60) == ("👍", "👎")
        assert await a.update_ordered("reactions", "1:2", "👍", False, 60) == ("👎",)
        assert await b.update_ordered("reactions", "1:2", "👎", False, 60) == ()
    finally:
        await a.aclose()
        await b.aclose()


async def test_memory_state_forgets_the_oldest_keys_past_its_bound():
    state = MemoryState(max_keys=3)
    for i in range(10):
        await state.update_ordered("reactions", str(i), "👍", True, 60)
    assert len(state) == 3
    assert await state.update_ordered("reactions", "9", "👎", True, 60) == ("👍", "👎")
    assert await state.update_ordered("reactions", "0", "👎", True, 60) == ("👎",)  # forgotten


async def test_reply_limits_of_two_processes_see_one_reply_in_progress(shared_redis):
    a, b = ReplyLimits(10, 1, shared=shared_redis), ReplyLimits(10, 1, shared=shared_redis)
    try:
        await check_one_reply_in_progress(a, b)
    finally:
        await a.state.aclose()
        await b.state.aclose()


async def test_while_redis_is_down_each_process_limits_on_its_own_and_says_so(caplog):
    limiter = rate_limiter(DOWN, "web:votes:ip", 2)
    state = shared_state(DOWN)
    with caplog.at_level(logging.ERROR):
        assert [limiter.retry_after("ip:x") for _ in range(2)] == [0.0, 0.0]
        assert limiter.retry_after("ip:x") > 0 and await limiter.retry_after_async("ip:x") > 0
        assert limiter.wait("ip:x") > 0 and await limiter.wait_async("ip:x") > 0
        assert await state.acquire("running", "u", 1, 60) and not await state.acquire("running", "u", 1, 60)
        assert await state.update_ordered("reactions", "1:2", "👍", True, 60) == ("👍",)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("rate limit web:votes:ip: Redis at redis://127.0.0.1:1/0 failed" in m for m in errors)
    assert any("shared state: Redis at redis://127.0.0.1:1/0 failed" in m for m in errors)
    assert len(errors) == 2  # once each, not once per call


def test_a_redis_url_must_be_one():
    with pytest.raises(ValueError, match="redis://"):
        SharedSettings(redis_url="127.0.0.1:6379")
