"""State several processes share through the PostgreSQL database when there is no Redis ([shared] backend = auto
and storage.url on PostgreSQL): one rate-limit budget, one count of replies in progress, one "still answering"
notice, one list of reactions; memory on SQLite; this process's own state (with a logged error) while the
database is down."""

from __future__ import annotations

import logging
import textwrap

import pytest
from sqlalchemy import create_engine, text

from loopbot.base.pg_limits import PgRateLimiter
from loopbot.base.pg_state import PgState
from loopbot.base.ratelimit import RateLimiter
from loopbot.base.settings import SharedSettings
from loopbot.base.shared import MemoryState, RedisState, shared_backend, shared_state
from loopbot.base.shared_limits import RedisRateLimiter, rate_limiter
from loopbot.bot.access import ReplyLimits
from tests.helpers.shared_checks import allowed_in_two_processes, check_one_reply_in_progress

SHARED = SharedSettings()  # backend = "auto", no Redis
SQLITE = "sqlite:///data/loopbot.db"
DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def test_auto_picks_redis_then_postgres_then_memory():
    assert shared_backend(SHARED, SQLITE) == "memory"
    assert type(rate_limiter(SHARED, "web:pages", 3, database_url=SQLITE)) is RateLimiter
    assert isinstance(shared_state(SHARED, SQLITE), MemoryState)
    assert shared_backend(SHARED, DOWN) == "postgres"
    assert isinstance(rate_limiter(SHARED, "web:pages", 3, database_url=DOWN), PgRateLimiter)
    assert isinstance(shared_state(SHARED, DOWN), PgState)
    with_redis = SharedSettings(redis_url="redis://127.0.0.1:6379/0")
    assert isinstance(rate_limiter(with_redis, "web:pages", 3, database_url=DOWN), RedisRateLimiter)
    assert isinstance(shared_state(with_redis, DOWN), RedisState)
    assert shared_backend(SharedSettings(backend="memory"), DOWN) == "memory"
    assert shared_backend(SharedSettings(backend="postgres", redis_url="redis://x:1/0"), DOWN) == "postgres"


def test_a_backend_that_cannot_be_is_refused():
    with pytest.raises(ValueError, match="a PostgreSQL storage"):
        shared_backend(SharedSettings(backend="postgres"), SQLITE)
    with pytest.raises(ValueError, match="redis_url"):
        SharedSettings(backend="redis")


@pytest.mark.postgres
async def test_two_limiters_on_one_database_share_one_budget(shared_postgres):
    first, second = (rate_limiter(SHARED, "web:votes:ip", 3, database_url=shared_postgres) for _ in range(2))
    assert isinstance(first, PgRateLimiter)
    assert [first.retry_after("ip:1.2.3.4") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert second.wait("ip:1.2.3.4") > 55  # over the limit: counts nothing, says how long
    assert 55 < second.retry_after("ip:1.2.3.4") <= 60
    assert await second.retry_after_async("ip:5.6.7.8") == 0.0  # other keys are not affected
    assert await first.wait_async("ip:1.2.3.4") > 55
    assert len(first) == 0  # nothing kept in the process
    with create_engine(shared_postgres).connect() as c:
        rows = c.execute(text("SELECT key, expires - at FROM shared_hits ORDER BY at")).all()
    assert [(k, round(ttl)) for k, ttl in rows] == [("loopbot:rl:web:votes:ip/ip:1.2.3.4", 60)] * 3 + [
        ("loopbot:rl:web:votes:ip/ip:5.6.7.8", 60)]


@pytest.mark.postgres
def test_two_processes_on_one_key_get_the_limit_in_all_not_each(shared_postgres):
    script = textwrap.dedent(f"""
        import asyncio
        from loopbot.base.settings import SharedSettings
        from loopbot.base.shared_limits import rate_limiter
        limiter = rate_limiter(SharedSettings(), "bot:messages", 7, database_url={shared_postgres!r})
        async def main():
            waits = await asyncio.gather(*(limiter.retry_after_async("discord:42") for _ in range(10)))
            return sum(w == 0 for w in waits)
        blocking = sum(limiter.retry_after("discord:42") == 0 for _ in range(5))
        print(blocking + asyncio.run(main()))
    """)
    allowed = allowed_in_two_processes(script)
    assert sum(allowed) == 7, allowed


@pytest.mark.postgres
async def test_shared_state_is_one_for_two_processes(shared_postgres):
    a, b = shared_state(SHARED, shared_postgres), shared_state(SHARED, shared_postgres)
    assert isinstance(a, PgState)
    assert await a.acquire("running", "u", 1, 60) and not await b.acquire("running", "u", 1, 60)
    await b.release("running", "u")
    assert await b.acquire("running", "u", 1, 60)
    assert await a.acquire("running", "v", 2, 60) and await b.acquire("running", "v", 2, 60)
    assert not await a.acquire("running", "v", 2, 60)
    await a.release("running", "v")
    assert await b.acquire("running", "v", 2, 60)
    assert await a.add_once("told_busy", "u", 60) and not await b.add_once("told_busy", "u", 60)
    await b.discard("told_busy", "u")
    assert await a.add_once("told_busy", "u", 60)
    assert await a.update_ordered("reactions", "1:2", "👍", True, 60) == ("👍",)
    assert await b.update_ordered("reactions", "1:2", "👎", True, 60) == ("👍", "👎")
    assert await a.update_ordered("reactions", "1:2", "👍", True, 60) == ("👎", "👍")  # moved to the end
    assert await a.update_ordered("reactions", "1:2", "👍", False, 60) == ("👎",)
    assert await b.update_ordered("reactions", "1:2", "👎", False, 60) == ()
    assert len(a) == len(b) == 0


@pytest.mark.postgres
async def test_expired_state_is_gone(shared_postgres):
    state = shared_state(SHARED, shared_postgres)
    assert await state.acquire("running", "u", 1, 0.01)
    assert await state.add_once("told_busy", "u", 0.01)
    assert await state.update_ordered("reactions", "1:2", "👍", True, 0.01) == ("👍",)
    with create_engine(shared_postgres).connect() as c:
        c.execute(text("SELECT pg_sleep(0.05)"))
    assert await state.acquire("running", "u", 1, 60)  # a process that died frees its slot
    assert await state.add_once("told_busy", "u", 60)
    assert await state.update_ordered("reactions", "1:2", "👎", True, 60) == ("👎",)


@pytest.mark.postgres
async def test_reply_limits_of_two_processes_see_one_reply_in_progress(shared_postgres):
    a, b = (ReplyLimits(10, 1, shared=SHARED, database_url=shared_postgres) for _ in range(2))
    await check_one_reply_in_progress(a, b)


async def test_while_the_database_is_down_each_process_limits_on_its_own_and_says_so(caplog):
    limiter = rate_limiter(SHARED, "web:votes:ip", 2, database_url=DOWN)
    state = shared_state(SHARED, DOWN)
    with caplog.at_level(logging.ERROR):
        assert [limiter.retry_after("ip:x") for _ in range(2)] == [0.0, 0.0]
        assert limiter.retry_after("ip:x") > 0 and await limiter.retry_after_async("ip:x") > 0
        assert limiter.wait("ip:x") > 0 and await limiter.wait_async("ip:x") > 0
        assert await state.acquire("running", "u", 1, 60) and not await state.acquire("running", "u", 1, 60)
        assert await state.update_ordered("reactions", "1:2", "👍", True, 60) == ("👍",)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("rate limit web:votes:ip: PostgreSQL at postgresql+psycopg://127.0.0.1:1/test failed" in m
               for m in errors)
    assert any("shared state: PostgreSQL at postgresql+psycopg://127.0.0.1:1/test failed" in m for m in errors)
    assert len(errors) == 2  # once each, not once per call


@pytest.mark.postgres
def test_the_shared_tables_sit_beside_the_migrated_schema_outside_alembic(shared_postgres):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from loopbot.base.pg_store import engine as shared_engine
    from loopbot.storage.db import make_engine, ours, upgrade

    eng = make_engine(shared_postgres)
    try:
        upgrade(eng)
        shared_engine(shared_postgres)  # makes shared_hits and shared_state
        with eng.connect() as conn:
            tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'shared_%'"))
                         .scalars())
            context = MigrationContext.configure(conn, opts={"compare_type": False, "include_name": ours})
            diff = compare_metadata(context, SQLModel.metadata)
        assert tables == {"shared_hits", "shared_state"}
        assert diff == []
    finally:
        eng.dispose()


def test_the_config_refuses_postgres_sharing_on_sqlite(settings):
    from pathlib import Path

    from loopbot.base.config import load_settings
    from loopbot.base.errors import ConfigError

    root = Path(__file__).resolve().parents[1]
    with pytest.raises(ConfigError, match=r"(?i)needs a PostgreSQL storage"):
        load_settings(root / "config.toml", env={}, overrides={"shared.backend": "postgres"})
    on_pg = load_settings(root / "config.toml", env={}, overrides={
        "shared.backend": "postgres", "storage.url": "postgresql+psycopg://u@h/db"})
    assert shared_backend(on_pg.shared, on_pg.database_url) == "postgres"


@pytest.mark.postgres
async def test_concurrent_slots_and_counts_are_never_given_twice(shared_postgres, caplog):
    import asyncio

    states = [shared_state(SHARED, shared_postgres) for _ in range(2)]
    got = await asyncio.gather(*(states[i % 2].acquire("running", "u", 5, 60) for i in range(20)))
    assert sum(got) == 5
    limiters = [rate_limiter(SHARED, "web:votes:ip", 4, database_url=shared_postgres) for _ in range(2)]
    waits = await asyncio.gather(*(limiters[i % 2].retry_after_async("ip:x") for i in range(20)))
    assert sum(w == 0 for w in waits) == 4
    assert rate_limiter(SHARED, "web:fresh", 0, database_url=shared_postgres).retry_after("x") == 60
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # all in the database, no fallback
