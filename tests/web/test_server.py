"""`web.server.serve(loopbot)` inside an asyncio loop, as `loopbot run` starts it."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from loopbot.base.errors import LoopbotError
from loopbot.web.server import serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_up(url: str, timeout_s: float = 10.0) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        for _ in range(int(timeout_s / 0.05)):
            try:
                return await c.get(url)
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def test_serve_listens_on_the_configured_address_and_stops_when_cancelled(loopbot):
    port = free_port()
    loopbot.settings.web.port = port
    task = asyncio.create_task(serve(loopbot))
    r = await _wait_up(f"http://127.0.0.1:{port}/healthz")
    assert r.json() == {"ok": True}
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"http://127.0.0.1:{port}/leaderboard/coach")).status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


async def test_serve_on_a_busy_port_fails_with_a_clear_error(loopbot):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        loopbot.settings.web.port = busy.getsockname()[1]
        with pytest.raises(LoopbotError, match=r"could not listen on 127\.0\.0\.1:\d+ .*\[web\] port"):
            await asyncio.wait_for(serve(loopbot), 10)
