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
