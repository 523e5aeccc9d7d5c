"""A throwaway PostgreSQL database for a benchmark: created on the test server, dropped afterwards."""

from __future__ import annotations

import os
import sys
import uuid

from sqlalchemy import create_engine, make_url, text

ADMIN_URL = os.environ.get("LOOPBOT_BENCH_POSTGRES",
                           os.environ.get("LOOPBOT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))


def create_scratch_database(*, quiet_reason: str = "its rows skipped") -> str | None:
    """The URL of a new, empty database, or None (with the reason on stderr) when PostgreSQL is unreachable."""
    name = f"loopbot_bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as e:
        print(f"PostgreSQL unavailable, {quiet_reason}: {e}", file=sys.stderr)
        return None
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_scratch_database(url: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()
