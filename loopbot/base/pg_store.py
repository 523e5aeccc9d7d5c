"""The PostgreSQL side of the shared state when there is no Redis: one small engine per process and database URL
(made on first use: a laptop on SQLite never makes one) and the two tables it keeps, `shared_hits` (rate-limit
events) and `shared_state` (busy counts, notices, reaction lists), each row with an expiry.

The tables are made here with CREATE TABLE IF NOT EXISTS, not by an alembic migration: loopbot.base may not import
loopbot.storage, the rows are throwaway (dropping the tables loses at most a minute of limits), and a web or bot
process works before `loopbot db upgrade`. alembic leaves them alone (storage/db.py FOREIGN_TABLE_PREFIXES).
Times are the database's clock (`NOW`), so processes on machines with skewed clocks agree."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, create_engine, text

from loopbot.base.state_base import describe_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2  # libpq's smallest; a statement (a lock wait included) gets STATEMENT_TIMEOUT_MS
STATEMENT_TIMEOUT_MS = 2000
ERROR_LOG_EVERY_S = 60.0
RETRY_AFTER_S = 5.0  # after a failure, the fallback alone this long (no connection attempt per call)
SWEEP_EVERY_S = 60.0  # how often a process deletes every expired row (each call also drops its own key's)
NOW = "CAST(extract(epoch from clock_timestamp()) AS double precision)"  # seconds, the database's clock

TABLES = (
    """CREATE TABLE IF NOT EXISTS shared_hits (
        key text NOT NULL, at double precision NOT NULL, expires double precision NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS shared_hits_key_at ON shared_hits (key, at)",
    "CREATE INDEX IF NOT EXISTS shared_hits_expires ON shared_hits (expires)",
    """CREATE TABLE IF NOT EXISTS shared_state (
        name text NOT NULL, key text NOT NULL, n bigint NOT NULL DEFAULT 0, items text[] NOT NULL DEFAULT '{}',
        expires double precision NOT NULL, PRIMARY KEY (name, key))""",
    "CREATE INDEX IF NOT EXISTS shared_state_expires ON shared_state (expires)",
)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
_last_sweep: dict[str, float] = {}


def engine(url: str) -> Engine:
    """This process's engine for `url`, its tables made (once per process; again after a failure)."""
    with _lock:
        eng = _engines.get(url)
        if eng is None:
            eng = create_engine(url, pool_size=2, max_overflow=6, pool_timeout=5, pool_recycle=300, connect_args={
                "connect_timeout": CONNECT_TIMEOUT_S, "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"})
            try:
                with eng.begin() as conn:
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('loopbot shared tables'))"))  # one DDL
                    for ddl in TABLES:
                        conn.execute(text(ddl))
            except Exception:
                eng.dispose()
                raise
            _engines[url] = eng
        return eng


def sweep_due(url: str) -> bool:
    """Whether this process should delete the expired rows of every key now (at most once a SWEEP_EVERY_S)."""
    now = time.monotonic()
    with _lock:
        if now - _last_sweep.get(url, -SWEEP_EVERY_S) < SWEEP_EVERY_S:
            return False
        _last_sweep[url] = now
        return True


class Outage:
    """The database's failures as one caller sees them: `failed` logs at most once a minute ("<what>: PostgreSQL
    at <url> failed (...); <then>"), and `skip` is True for RETRY_AFTER_S after a failure, so that while the
    database is down each call uses the in-memory fallback at once instead of waiting for a connection."""

    def __init__(self, what: str, url: str, then: str):
        self.what, self.url, self.then = what, url, then
        self._logged = self._failed = 0.0

    def skip(self) -> bool:
        return bool(self._failed) and time.monotonic() - self._failed < RETRY_AFTER_S

    def failed(self, error: Exception) -> None:
        now = self._failed = time.monotonic()
        if not self._logged or now - self._logged >= ERROR_LOG_EVERY_S:
            self._logged = now
            log.error("%s: PostgreSQL at %s failed (%s: %s); %s", self.what, describe_url(self.url),
                      type(error).__name__, error, self.then)


def sweep(url: str) -> None:
    """Delete the expired rows of every key (both tables), when this process has not done so in a while."""
    if sweep_due(url):
        with engine(url).begin() as conn:
            conn.execute(text(f"DELETE FROM shared_hits WHERE expires < {NOW}"))
            conn.execute(text(f"DELETE FROM shared_state WHERE expires < {NOW}"))


def forget(url: str) -> None:
    """Close this process's engine for `url` (tests, before they drop a database)."""
    with _lock:
        eng = _engines.pop(url, None)
        _last_sweep.pop(url, None)
    if eng is not None:
        eng.dispose()
