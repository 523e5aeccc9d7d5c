"""Two web processes on one Redis ([shared] redis_url), or without Redis on one PostgreSQL database, hold one arena
vote limit, not one each: two apps on the same Loopbot settings, each with its own limiters (as `loopbot web`
started twice would have)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from loopbot.base.pg_limits import PgRateLimiter
from loopbot.base.ratelimit import RateLimiter
from loopbot.base.shared_limits import RedisRateLimiter
from loopbot.web.app import create_app
from tests.web.seed import arena_world
from tests.web.test_arena import _vote


def test_the_per_address_vote_limit_holds_across_two_web_processes(loopbot, shared_redis):
    loopbot.settings.shared = shared_redis
    loopbot.settings.web.votes_per_minute_per_ip = 4
    arena_world(loopbot, prompts=3)
    first, second = create_app(loopbot), create_app(loopbot)
    assert isinstance(first.state.ip_limit, RedisRateLimiter)
    codes = []
    html = {"accept": "text/html"}
    with TestClient(first, headers=html) as a, TestClient(second, headers=html) as b:
        for client in (a, b, a, b, a, b):
            client.cookies.clear()  # a new anonymous visitor each time, from the same address
            codes.append(_vote(client)[1].status_code)
        r = _vote(b)[1]
    assert codes == [303] * 4 + [429] * 2
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60


def test_the_page_load_limit_holds_across_two_web_processes(loopbot, shared_redis):
    loopbot.settings.shared = shared_redis
    loopbot.settings.web.pages_per_minute_per_ip = 3
    arena_world(loopbot, prompts=1)
    with TestClient(create_app(loopbot)) as a, TestClient(create_app(loopbot)) as b:
        codes = [c.get("/arena/coach").status_code for c in (a, b, a, b)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.postgres
def test_without_redis_the_vote_limit_holds_across_two_web_processes_on_postgresql(loopbot, shared_postgres):
    loopbot.settings.storage.url = shared_postgres  # what [shared] backend = "auto" reads (the pages keep the engine)
    loopbot.settings.web.votes_per_minute_per_ip = 4
    arena_world(loopbot, prompts=3)
    first, second = create_app(loopbot), create_app(loopbot)
    assert isinstance(first.state.ip_limit, PgRateLimiter) and isinstance(second.state.page_limit, PgRateLimiter)
    codes = []
    html = {"accept": "text/html"}
    with TestClient(first, headers=html) as a, TestClient(second, headers=html) as b:
        for client in (a, b, a, b, a, b):
            client.cookies.clear()
            codes.append(_vote(client)[1].status_code)
        r = _vote(b)[1]
    assert codes == [303] * 4 + [429] * 2
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60


def test_on_sqlite_each_web_process_limits_on_its_own(loopbot):
    assert loopbot.settings.database_url.startswith("sqlite")
    assert type(create_app(loopbot).state.ip_limit) is RateLimiter
