"""Test databases: a fresh SQLite file, or a throwaway database on the PostgreSQL server at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import create_engine, text

POSTGRES_ADMIN_URL = os.environ.get("LOOPBOT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_unreachable_reason() -> str | None:
    """None if the server answers, else why not (shown as the skip reason)."""
    try:
        eng = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as e:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {type(e).__name__}: {str(e).splitlines()[0]}"


def create_postgres_database() -> str:
    """Create a uniquely named database (parallel test runs never share one) and return its URL."""
    name = f"loopbot_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def truncate_all(engine) -> None:
    from sqlmodel import SQLModel

    tables = [t.name for t in SQLModel.metadata.sorted_tables]
    with engine.begin() as c:
        if engine.dialect.name == "postgresql":
            c.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
            for t in ("shared_hits", "shared_state"):  # loopbot.base.pg_store's, outside the models
                c.execute(text(f"DO $$ BEGIN IF to_regclass('{t}') IS NOT NULL THEN DELETE FROM {t}; END IF; END $$"))
        else:
            for t in reversed(tables):
                c.execute(text(f'DELETE FROM "{t}"'))
