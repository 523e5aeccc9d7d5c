"""Stopping the `loopbot` processes a test or a bench started: SIGTERM to all, then a kill for any that hangs."""

from __future__ import annotations

import asyncio
import signal


async def stop_processes(procs: list[asyncio.subprocess.Process], timeout_s: float = 30.0) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
