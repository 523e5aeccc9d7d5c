"""Per-user reply limits: messages per minute and replies in progress, forgetting users who went quiet."""

from __future__ import annotations

from loopbot.bot.access import ReplyLimits


def test_one_reply_at_a_time_and_a_per_minute_cap():
    now = [0.0]
    limits = ReplyLimits(2, 1, clock=lambda: now[0])
    assert limits.refusal("u") is None
    assert "still answering" in limits.refusal("u")
    limits.done("u")
    assert limits.refusal("u") is None
    limits.done("u")
    now[0] = 15.0
    assert "(2 a minute). Please wait about 45 s." in limits.refusal("u")
    now[0] = 60.0
    assert limits.refusal("u") is None


def test_users_who_went_quiet_are_forgotten():
    now = [0.0]
    limits = ReplyLimits(10, 1, clock=lambda: now[0])
    for i in range(5_000):  # a new user every second, one reply each
        assert limits.refusal(f"telegram:{i}") is None
        limits.done(f"telegram:{i}")
        now[0] += 1
        assert len(limits) <= 61
