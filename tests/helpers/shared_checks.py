"""Checks that hold for every way several processes share state (Redis, PostgreSQL): tests/test_shared_state.py
and tests/test_shared_pg.py run them on their store."""

from __future__ import annotations

import subprocess
import sys

from loopbot.bot.access import BUSY


async def check_one_reply_in_progress(a, b) -> None:
    """Two processes' ReplyLimits (10 a minute, 1 at a time) see one reply in progress and one budget."""
    assert await a.refusal("telegram:1") is None
    assert await b.refusal("telegram:1") == BUSY
    assert await b.should_tell("telegram:1", BUSY)  # "still answering": told once, whichever process
    assert not await a.should_tell("telegram:1", BUSY)
    await a.done("telegram:1")
    assert await b.refusal("telegram:1") is None
    await b.done("telegram:1")
    for _ in range(8):
        assert await a.refusal("telegram:1") is None
        await a.done("telegram:1")
    refusal = await b.refusal("telegram:1")  # the 11th message in the minute, through the other process
    assert refusal and "(10 a minute)" in refusal


def allowed_in_two_processes(script: str) -> list[int]:
    """Run `script` (it prints how many of its tries its limiter allowed) in two processes at once."""
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    allowed = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return allowed
