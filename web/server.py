"""`serve(loopbot)`: the web pages on settings.web.host:port, inside `loopbot run`'s asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from loopbot.base.errors import LoopbotError
from loopbot.web.app import create_app

log = logging.getLogger(__name__)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process that embeds it decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def make_server(loopbot, *, host: str | None = None, port: int | None = None, app=None) -> EmbeddedServer:
    settings = loopbot.settings.web
    config = uvicorn.Config(app or create_app(loopbot), host=host or settings.host,
                            port=settings.port if port is None else port, log_level="warning", access_log=False,
                            proxy_headers=True, forwarded_allow_ips="127.0.0.1", lifespan="off",
                            timeout_graceful_shutdown=5)
    return EmbeddedServer(config)


async def serve(loopbot) -> None:
    """Serve until cancelled; cancelling closes the listening socket and open connections, then re-raises."""
    server = make_server(loopbot)
    try:  # open the database (and run migrations) once, before requests race to do it
        await asyncio.to_thread(lambda: loopbot.engine)
    except Exception as e:
        log.warning("the web pages start without the database: %s", e)
    log.info("web pages on http://%s:%d/ (arena, leaderboard, admin, /metrics)",
             loopbot.settings.web.host, loopbot.settings.web.port)
    try:
        await server.serve()
    except asyncio.CancelledError:
        server.should_exit = True
        if server.started:
            await server.shutdown()
        raise
    except SystemExit:  # uvicorn exits when it cannot bind
        server.started = False
    if not server.started:
        raise LoopbotError(f"the web pages could not listen on {loopbot.settings.web.host}:"
                           f"{loopbot.settings.web.port} (is the port in use? set [web] port)")
