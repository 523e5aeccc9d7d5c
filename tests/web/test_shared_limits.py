"""Two web processes on one Redis ([shared] redis_url) hold one arena vote limit, not one each: two apps on the
same Loopbot settings, each with its own limiters (as `loopbot web` started twice would have)."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
