"""PostgreSQL connections the server dropped are replaced on checkout (the ping after idle), not a failed call."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from loopbot.storage import db
from loopbot.storage.db import make_engine

pytestmark = pytest.mark.postgres


def test_a_connection_the_server_dropped_while_idle_is_replaced(postgres_url, monkeypatch):
    engine, admin = make_engine(postgres_url), make_engine(postgres_url)
    try:
        with engine.connect() as c:
            first = c.execute(text("select pg_backend_pid()")).scalar()
        with admin.connect() as c:
            c.execute(text("select pg_terminate_backend(:pid)"), {"pid": first})
            c.commit()
        monkeypatch.setattr(db, "IDLE_PING_S", 0.0)  # as if the pooled connection had sat unused for a while
        with engine.connect() as c:
            assert c.execute(text("select pg_backend_pid()")).scalar() != first
    finally:
        engine.dispose()
        admin.dispose()
