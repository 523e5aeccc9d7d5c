"""Web fixtures: a Loopbot on the test database and a FastAPI test client for its pages."""

from __future__ import annotations

import pytest

ADMIN_TOKEN = "correct-horse-battery-staple-0123456789"


@pytest.fixture
def loopbot(settings, engine):
    from loopbot.app import Loopbot

    bot = Loopbot(settings)
    bot.engine = engine  # the fixture's database (SQLite and PostgreSQL), instead of the settings' file
    return bot


@pytest.fixture
def client(loopbot, monkeypatch):
    from fastapi.testclient import TestClient

    from loopbot.web.app import create_app

    monkeypatch.setenv(loopbot.settings.web.admin_token_env, ADMIN_TOKEN)
    with TestClient(create_app(loopbot), headers={"accept": "text/html"}) as c:
        yield c


@pytest.fixture
def serve_app(loopbot, monkeypatch):
    """`serve_app()` -> (base URL, app): the Loopbot's web app served by uvicorn in a thread on a free loopback
    port, for tests that need real HTTP (concurrent requests, raw bodies)."""
    import socket
    import threading
    import time

    from loopbot.web.app import create_app
    from loopbot.web.server import make_server

    monkeypatch.setenv(loopbot.settings.web.admin_token_env, ADMIN_TOKEN)
    running = []

    def start(app=None):
        app = app or create_app(loopbot)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = make_server(loopbot, host="127.0.0.1", port=port, app=app)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        for _ in range(400):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{port}", app

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(10)
