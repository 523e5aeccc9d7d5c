"""Per-user reply limits: messages per minute and replies in progress, forgetting users who went quiet."""

from __future__ import annotations

from loopbot.bot.access import ReplyLimits


async def test_one_reply_at_a_time_and_a_per_minute_cap():
    now = [0.0]
    limits = ReplyLimits(2, 1, clock=lambda: now[0])
    assert await limits.refusal("u") is None
    assert "still answering" in await limits.refusal("u")
    await limits.done("u")
    assert await limits.refusal("u") is None
    await limits.done("u")
    now[0] = 15.0
    assert "(2 a minute). Please wait about 45 s." in await limits.refusal("u")
    now[0] = 60.0
    assert await limits.refusal("u") is None


async def test_users_who_went_quiet_are_forgotten():
    now = [0.0]
    limits = ReplyLimits(10, 1, clock=lambda: now[0])
    for i in range(5_000):  # a new user every second, one reply each
        assert await limits.refusal(f"telegram:{i}") is None
        await limits.done(f"telegram:{i}")
        now[0] += 1
        assert len(limits) <= 61
