"""Engine from a URL, sessions, and migrations. Nothing is created at import time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlmodel import Session, create_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# tables kept in the same database outside alembic: procrastinate's job queue, APScheduler's jobs, and the state
# several processes share without Redis (loopbot/base/pg_store.py)
FOREIGN_TABLE_PREFIXES = ("procrastinate_", "apscheduler_", "shared_")


def ours(name: str | None, type_: str, parent_names: dict) -> bool:
    """alembic's include_name: compare and autogenerate loopbot's own tables only."""
    return not (type_ == "table" and name and name.startswith(FOREIGN_TABLE_PREFIXES))


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for `sqlite:///path` or `postgresql+psycopg://...`; SQLite gets WAL and foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # 32 connections at most: storage/aio.py runs that many database threads for the asyncio side
    engine = create_engine(url, echo=echo, pool_size=8, max_overflow=24)
    _ping_when_idle(engine)
    return engine


IDLE_PING_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, only for a connection unused for IDLE_PING_S: a ping costs two round trips (BEGIN, SELECT),
    most of a hot-path write's when the database is across a network. A connection that died while busy fails its
    statement once, and SQLAlchemy then replaces every pooled connection."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn, record):
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn, record):
        if record is not None:
            record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        if time.monotonic() - record.info.get("checked_in", 0.0) < IDLE_PING_S:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as e:
            raise DisconnectionError(f"the pooled connection is gone: {e}") from e


DB = Engine | Session  # what a crud function writes with: a new transaction of its own, or the caller's


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def transaction(db: DB) -> Iterator[Session]:
    """The session to work in: the caller's own (its transaction, which the caller commits or rolls back), or on an
    engine a new one, committed on success and rolled back on any error. Writes that belong together share one."""
    if isinstance(db, Session):
        yield db
        return
    with session_scope(db) as session:
        yield session


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` with alembic."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
