"""A bot's webhook as loopbot's own ASGI route (python-telegram-bot's custom-webhook pattern): uvicorn on a socket
loopbot binds itself, optionally with SO_REUSEPORT so several processes on one host listen on one address and the
kernel spreads the connections among them. No platform SDK here: the route hands the JSON body to `receive`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY_BYTES = 1 << 20

Receive = Callable[[dict], Awaitable[None]]


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket; `reuse_port`: SO_REUSEPORT, so other processes may bind the same address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def webhook_app(path: str, secret: str | None, receive: Receive) -> Starlette:
    """POST `path`: 403 without the secret header (when a secret is set), 400 for a body that is not an update,
    500 if `receive` fails (Telegram delivers it again), else 200 once `receive` has taken the update."""

    async def endpoint(request: Request) -> Response:
        if secret is not None and not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(),
                                                          secret.encode()):
            return Response(status_code=403)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return Response(status_code=413)
        try:
            data = json.loads(body)
        except ValueError:
            return Response(status_code=400)
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return Response(status_code=400)
        try:
            await receive(data)
        except Exception:
            log.exception("could not take webhook update %s", data.get("update_id"))
            return Response(status_code=500)
        return Response(status_code=200)

    return Starlette(routes=[Route("/" + path.lstrip("/"), endpoint, methods=["POST"])])


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `loopbot run` decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class WebhookServer:
    """Serve `webhook_app` on host:port until `stop()`."""

    def __init__(self, app: Starlette, host: str, port: int, *, reuse_port: bool = False):
        self.app, self.host, self.port, self.reuse_port = app, host, port, reuse_port
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        sock = listening_socket(self.host, self.port, reuse_port=self.reuse_port)  # OSError: port in use
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"webhook:{self.port}")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"the webhook server on {self.host}:{self.port} stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = None
