"""The one rate limiter (chat messages, arena votes, admin logins): limits hold, and idle keys are forgotten."""

from __future__ import annotations

from loopbot.base.ratelimit import RateLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_limit_per_window_and_then_a_wait():
    clock = Clock()
    limiter = RateLimiter(3, 60.0, clock=clock)
    assert [limiter.retry_after("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 20
    assert limiter.retry_after("alice") == 40.0  # the first event leaves the window in 40 s
    assert limiter.retry_after("bob") == 0.0  # other keys are not affected
    clock.now += 40
    assert limiter.retry_after("alice") == 0.0


def test_idle_keys_are_forgotten_so_memory_stays_bounded():
    clock = Clock()
    limiter = RateLimiter(2, 60.0, clock=clock)
    for i in range(10_000):  # a new visitor every second, each seen once
        assert limiter.retry_after(f"visitor:{i}") == 0.0
        clock.now += 1
        assert len(limiter) <= 61
    assert "visitor:0" not in limiter and "visitor:9999" in limiter


def test_a_busy_key_keeps_its_limit_while_others_come_and_go():
    clock = Clock()
    limiter = RateLimiter(2, 60.0, clock=clock)
    limiter.retry_after("flood")
    limiter.retry_after("flood")
    for i in range(50):
        clock.now += 1
        limiter.retry_after(f"other:{i}")
        assert limiter.retry_after("flood") > 0
    clock.now += 10
    assert limiter.retry_after("flood") == 0.0
