"""SharedState in the PostgreSQL database when there is no Redis: one `shared_state` row per name and key
(loopbot/base/pg_store.py) with a count (`acquire`/`release`, `add_once`) or a list (`update_ordered`) and an
expiry. Each method is one transaction whose upsert locks the row, so two processes cannot both take the last
slot or both change the same old list. The calls run in a thread: the event loop never waits on the database.
If the database cannot be reached, the state logs an error (at most once a minute) and uses this process's own
MemoryState until it answers."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from loopbot.base.pg_store import NOW, Outage, engine, sweep
from loopbot.base.state_base import MemoryState, SharedState

_ACQUIRE = text(f"""
INSERT INTO shared_state (name, key, n, expires) VALUES (:name, :key, 1, {NOW} + :ttl)
ON CONFLICT (name, key) DO UPDATE SET expires = excluded.expires,
    n = CASE WHEN shared_state.expires <= {NOW} THEN 1 ELSE shared_state.n + 1 END
WHERE shared_state.expires <= {NOW} OR shared_state.n < :limit
RETURNING 1""")
_RELEASE = (text("UPDATE shared_state SET n = n - 1 WHERE name = :name AND key = :key"),
            text("DELETE FROM shared_state WHERE name = :name AND key = :key AND n <= 0"))
_ADD_ONCE = text(f"""
INSERT INTO shared_state (name, key, n, expires) VALUES (:name, :key, 1, {NOW} + :ttl)
ON CONFLICT (name, key) DO UPDATE SET n = 1, expires = excluded.expires WHERE shared_state.expires <= {NOW}
RETURNING 1""")
_DISCARD = text("DELETE FROM shared_state WHERE name = :name AND key = :key")
_UPDATE_ORDERED = (text(f"""
INSERT INTO shared_state (name, key, items, expires)
VALUES (:name, :key, CASE WHEN :present THEN ARRAY[CAST(:item AS text)] ELSE CAST('{{}}' AS text[]) END,
        {NOW} + :ttl)
ON CONFLICT (name, key) DO UPDATE SET expires = excluded.expires, items = array_remove(
    CASE WHEN shared_state.expires <= {NOW} THEN CAST('{{}}' AS text[]) ELSE shared_state.items END, :item)
    || excluded.items
RETURNING items"""), text("DELETE FROM shared_state WHERE name = :name AND key = :key AND cardinality(items) = 0"))


class PgState(SharedState):
    """Every process on the same database sees the same state: rows (`name`, `<key_prefix>:<key>`)."""

    def __init__(self, url: str, *, max_keys: int = 10_000, key_prefix: str = "loopbot:st"):
        self.url, self.key_prefix = url, key_prefix
        self.fallback = MemoryState(max_keys=max_keys)  # while the database is down
        self.outage = Outage("shared state", url, "keeping state in this process until it answers")

    def __len__(self) -> int:
        return len(self.fallback)

    async def aclose(self) -> None:
        """Nothing to close per event loop (the engine is the process's; see pg_store)."""

    async def _call(self, fallback, run, **args):
        if not self.outage.skip():
            try:
                return await asyncio.to_thread(self._in_database, run, args)
            except Exception as e:  # sqlalchemy.exc.OperationalError, OSError: down or unreachable
                self.outage.failed(e)
        return await fallback()

    def _in_database(self, run, args: dict):
        sweep(self.url)
        with engine(self.url).begin() as conn:
            return run(conn, {**args, "key": f"{self.key_prefix}:{args['key']}"})

    async def acquire(self, name, key, limit, ttl_s):
        if limit <= 0:
            return False
        return await self._call(lambda: self.fallback.acquire(name, key, limit, ttl_s),
                                lambda c, a: c.execute(_ACQUIRE, a).first() is not None,
                                name=name, key=key, limit=limit, ttl=float(ttl_s))

    async def release(self, name, key):
        def run(c, a):
            for statement in _RELEASE:
                c.execute(statement, a)

        await self._call(lambda: self.fallback.release(name, key), run, name=name, key=key)

    async def add_once(self, name, key, ttl_s):
        return await self._call(lambda: self.fallback.add_once(name, key, ttl_s),
                                lambda c, a: c.execute(_ADD_ONCE, a).first() is not None,
                                name=name, key=key, ttl=float(ttl_s))

    async def discard(self, name, key):
        await self._call(lambda: self.fallback.discard(name, key), lambda c, a: c.execute(_DISCARD, a),
                         name=name, key=key)

    async def update_ordered(self, name, key, item, present, ttl_s):
        def run(c, a):
            items = tuple(c.execute(_UPDATE_ORDERED[0], a).scalar_one())
            if not items:
                c.execute(_UPDATE_ORDERED[1], a)
            return items

        return await self._call(lambda: self.fallback.update_ordered(name, key, item, present, ttl_s), run,
                                name=name, key=key, item=item, present=bool(present), ttl=float(ttl_s))
