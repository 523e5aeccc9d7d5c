"""A loopback TCP proxy that delays every byte by a fixed time in each direction: a database "across a network" for
the benchmarks. Runs in its own process (`LatencyProxy` starts it), so its work does not share the measured event
loop. `python bench/latency_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS` runs it by hand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader -> writer, each chunk written `delay_s` after it was read (order kept)."""
    queue: asyncio.Queue = asyncio.Queue()

    async def later() -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(later())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay_s, data))
    finally:
        queue.put_nowait((0.0, None))
        with contextlib.suppress(Exception):
            await sender
            writer.close()


async def serve(listen_port: int, host: str, port: int, delay_s: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        for w in (client_w, server_w):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(client_r, server_w, delay_s), _pipe(server_r, client_w, delay_s),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


class LatencyProxy:
    """`with LatencyProxy(host, port, delay_ms=2) as proxy:` then connect to 127.0.0.1:proxy.port."""

    def __init__(self, host: str, port: int, *, delay_ms: float = 2.0):
        self.host, self.target_port, self.delay_ms = host, port, delay_ms
        self.port = 0
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> LatencyProxy:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(self.port), self.host,
                                          str(self.target_port), str(self.delay_ms)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"the latency proxy did not start on port {self.port}")

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


if __name__ == "__main__":
    listen, target_host, target_port, delay_ms = sys.argv[1:5]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(listen), target_host, int(target_port), float(delay_ms) / 1000))
