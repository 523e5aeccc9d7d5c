"""The crud functions for asyncio code: each call runs whole in a thread of a pool owned by the engine, so the event
loop never waits on the database. One thread for SQLite (one writer at a time, and no busy-waiting on its lock);
for PostgreSQL as many threads as the engine's connection pool holds. docs/architecture.md#database-io says why this
and not SQLAlchemy's asyncio drivers (measured: 3.3x the operations per second on SQLite, 2.3x on PostgreSQL)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

T = TypeVar("T")
log = logging.getLogger(__name__)

POSTGRES_THREADS = 32  # at most the engine's pool (pool_size + max_overflow); see storage.db.make_engine

_shared: weakref.WeakKeyDictionary[Engine, AsyncDB] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


class AsyncDB:
    """`await db.run(crud.get_user, user_id=1)`: the sync crud function called with the engine, off the loop."""

    def __init__(self, engine: Engine, *, threads: int | None = None):
        self.engine = engine
        self.threads = threads or default_threads(engine)
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="loopbot-db")
        self._later: list[Callable[[], Any]] = []
        self._flushing: asyncio.Task | None = None

    @classmethod
    def of(cls, engine: Engine | AsyncDB) -> AsyncDB:
        """The one AsyncDB of this engine (every chat service of a process shares its threads)."""
        if isinstance(engine, AsyncDB):
            return engine
        with _shared_lock:
            db = _shared.get(engine)
            if db is None:
                db = _shared[engine] = cls(engine)
            return db

    async def run(self, fn: Callable[..., T], /, *args: Any, **kw: Any) -> T:
        """`fn(engine, *args, **kw)` in the database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, self.engine, *args, **kw))

    async def call(self, fn: Callable[..., T], /, *args: Any, **kw: Any) -> T:
        """`fn(*args, **kw)` in the database threads (a function that opens its own transaction)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kw))

    def later(self, fn: Callable[..., Any], /, **kw: Any) -> None:
        """Write `fn(engine, **kw)` soon, in order, batched with the other writes queued meanwhile (one trip to the
        threads for many replies in a burst). For writes nothing waits on: `settle()` before reading what they wrote."""
        self._later.append(functools.partial(fn, self.engine, **kw))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def settle(self) -> None:
        """Wait until every write queued with `later` is done."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._later:
            batch, self._later = self._later, []
            await loop.run_in_executor(self._executor, _each, batch)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _each(writes: list[Callable[[], Any]]) -> None:
    for write in writes:
        try:
            write()
        except Exception:  # one failed write must not lose the others
            log.exception("a queued database write failed")


def default_threads(engine: Engine) -> int:
    if engine.dialect.name == "sqlite":
        return 1
    size = getattr(engine.pool, "size", None)
    overflow = getattr(engine.pool, "_max_overflow", 0)
    pooled = size() + max(overflow, 0) if callable(size) else POSTGRES_THREADS
    return max(1, min(POSTGRES_THREADS, pooled))
