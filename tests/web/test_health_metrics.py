"""/healthz, /readyz and /metrics: what an operator's probes and Prometheus see."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from loopbot.storage import crud
from loopbot.web.app import create_app
from loopbot.web.metrics import record_swap
from tests.web.seed import arena_world, reply


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_answers_without_the_database(settings):
    from loopbot.app import Loopbot

    bot = Loopbot(settings)
    with TestClient(create_app(bot)) as c:
        assert c.get("/healthz").json() == {"ok": True}
    assert "engine" not in vars(bot)  # liveness never touched the database


def test_readyz_without_a_serving_backend_checks_the_database(client):
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == {"ok": True}


def test_readyz_fails_when_the_database_is_unreachable(settings):
    from loopbot.app import Loopbot
    from loopbot.storage.db import make_engine

    bot = Loopbot(settings)
    bot.engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2")
    with TestClient(create_app(bot)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"]["ok"] is False
    assert "OperationalError" in r.json()["checks"]["database"]["error"]


async def test_readyz_waits_until_the_live_adapter_is_loaded(client, loopbot):
    from loopbot.serving.router import Router
    from testkit.instant_backend import InstantBackend

    arena_world(loopbot)  # coach-v2 is live in the database
    backend = InstantBackend()
    loopbot.router = Router(backend)
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["adapters"] == {"ok": False, "live": ["coach-v2"], "missing": ["coach-v2"]}
    await backend.load_adapter("coach-v2", str(loopbot.settings.adapters_dir / "coach" / "v2"))
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["serving"] == {"ok": True, "backend": "instant"}


def test_metrics_count_from_the_database(client, loopbot):
    eng = loopbot.engine
    gens = arena_world(loopbot, prompts=2)
    slow = reply(eng, persona="comedian", prompt="Un chiste", text="...", version=None, latency_ms=7000)
    voter = crud.get_or_create_user(eng, platform="discord", platform_user_id="v")
    crud.upsert_vote(eng, generation_id=gens["coach-v2"][0], user_id=voter.id, value=1)
    crud.upsert_vote(eng, generation_id=gens["coach-v2"][1], user_id=voter.id, value=-1)
    crud.upsert_vote(eng, generation_id=slow, user_id=voter.id, value=1)
    cmp = crud.create_comparison(eng, persona="coach", generation_a_id=gens["base"][0],
                                 generation_b_id=gens["coach-v1"][0], user_id=voter.id)
    crud.record_pick(eng, comparison_id=cmp.id, pick="tie")
    run = crud.start_training_run(eng, persona="coach")
    crud.finish_training_run(eng, run_id=run.id, status="rejected")
    crud.record_event(eng, kind="swap", persona="coach", data={"duration_s": 0.4})
    record_swap("coach", 1.5, ok=True)

    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)
    assert m[("loopbot_messages_total", (("persona", "coach"),))] == 6
    assert m[("loopbot_replies_total", (("persona", "coach"), ("status", "ok"), ("version", "coach-v2")))] == 2
    assert m[("loopbot_tokens_total", (("kind", "completion"), ("persona", "coach"), ("version", "base")))] == 14
    assert m[("loopbot_votes_total", (("persona", "coach"), ("value", "up"), ("version", "coach-v2")))] == 1
    assert m[("loopbot_votes_total", (("persona", "coach"), ("value", "down"), ("version", "coach-v2")))] == 1
    assert m[("loopbot_votes_total", (("persona", "comedian"), ("value", "up"), ("version", "base")))] == 1
    assert m[("loopbot_arena_picks_total", (("persona", "coach"), ("pick", "tie"), ("source", "chat")))] == 1
    assert m[("loopbot_training_runs_total", (("persona", "coach"), ("status", "rejected")))] == 1
    assert m[("loopbot_live_version", (("persona", "coach"),))] == 2
    assert m[("loopbot_swaps_total", (("persona", "coach"),))] == 2  # two activations
    assert m[("loopbot_swap_duration_seconds_count", (("persona", "coach"),))] == 1
    latency = {k[1]: v for k, v in m.items() if k[0] == "loopbot_reply_latency_seconds_bucket"}
    assert latency[(("le", "5.0"), ("persona", "comedian"))] == 0
    assert latency[(("le", "10.0"), ("persona", "comedian"))] == 1
    assert latency[(("le", "1.0"), ("persona", "coach"))] == 6
    assert m[("loopbot_reply_latency_seconds_sum", (("persona", "comedian"),))] == 7.0
    assert m[("loopbot_process_swaps_total", (("outcome", "ok"), ("persona", "coach")))] >= 1


def test_refused_votes_are_counted(client, loopbot):
    arena_world(loopbot)
    client.get("/arena/coach")
    before = _samples(client.get("/metrics").text).get(
        ("loopbot_web_votes_refused_total", (("reason", "csrf"),)), 0)
    client.post("/arena/coach/vote", data={"a": 1, "b": 2, "pick": "a"})
    after = _samples(client.get("/metrics").text)[("loopbot_web_votes_refused_total", (("reason", "csrf"),))]
    assert after == before + 1


def test_readyz_fails_when_the_sqlite_file_turns_to_garbage(settings):
    from pathlib import Path

    from loopbot.app import Loopbot

    bot = Loopbot(settings)
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    with TestClient(create_app(bot)) as c:
        assert c.get("/readyz").status_code == 200  # the pool now holds an open connection
        path.write_bytes(b"this is not a database " * 4096)
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["database"]["ok"] is False
    assert str(path) not in r.text


def test_readyz_never_shows_the_database_address(settings, postgres_url):
    from loopbot.app import Loopbot
    from loopbot.storage.db import make_engine

    good_name = postgres_url.rsplit("/", 1)[1]
    bot = Loopbot(settings)
    bot.engine = make_engine(postgres_url)
    with TestClient(create_app(bot)) as c:
        ok = c.get("/readyz")
    missing = "loopbot_no_such_database_x7"
    broken = Loopbot(settings)
    broken.engine = make_engine(postgres_url.rsplit("/", 1)[0] + f"/{missing}")
    with TestClient(create_app(broken)) as c:
        bad = c.get("/readyz")
    assert ok.status_code == 200 and bad.status_code == 503
    assert bad.json()["checks"]["database"]["ok"] is False
    for body in (ok.text, bad.text):
        for secret in ("127.0.0.1", "5432", good_name, missing, "postgres"):
            assert secret not in body, (secret, body)


def _replies_total(client) -> float:
    m = _samples(client.get("/metrics").text)
    return sum(v for (name, labels), v in m.items()
               if name == "loopbot_replies_total" and ("persona", "coach") in labels)


def _statements(engine):
    from sqlalchemy import event

    seen = []

    def count(*_args):
        seen.append(1)

    event.listen(engine, "after_cursor_execute", count)
    return seen, lambda: event.remove(engine, "after_cursor_execute", count)


def test_metrics_scrapes_within_the_age_read_no_table(client, loopbot):
    arena_world(loopbot, prompts=1)
    assert _replies_total(client) == 3  # the first scrape counts
    seen, stop = _statements(loopbot.engine)
    try:
        for _ in range(5):
            assert _replies_total(client) == 3
    finally:
        stop()
    assert seen == []  # cached: no statement at all, however often Prometheus scrapes


def test_metrics_reflect_a_new_reply_within_the_bounded_age(client, loopbot):
    import time

    loopbot.settings.web.metrics_max_age_s = 0.5
    arena_world(loopbot, prompts=1)
    assert _replies_total(client) == 3
    reply(loopbot.engine, persona="coach", prompt="One more question", text="One more answer", version=None)
    assert _replies_total(client) == 3  # still the cached counts: younger than the age
    deadline = time.monotonic() + 30  # the age, then one background count (generous for a busy machine)
    while _replies_total(client) != 4:
        assert time.monotonic() < deadline, "the new reply never reached /metrics"
        time.sleep(0.1)


def test_metrics_count_at_every_scrape_when_the_age_is_zero(client, loopbot):
    loopbot.settings.web.metrics_max_age_s = 0
    arena_world(loopbot, prompts=1)
    assert _replies_total(client) == 3
    reply(loopbot.engine, persona="coach", prompt="One more question", text="One more answer", version=None)
    assert _replies_total(client) == 4


def test_two_web_processes_over_one_database_each_serve_counts_within_the_age(loopbot, engine, monkeypatch):
    """Two apps with engines of their own (as two processes have) over one database: a reply stored through one
    reaches the other's /metrics within the age, whichever counted first."""
    import time

    from loopbot.app import Loopbot
    from loopbot.storage.db import make_engine
    from tests.web.conftest import ADMIN_TOKEN

    monkeypatch.setenv(loopbot.settings.web.admin_token_env, ADMIN_TOKEN)
    loopbot.settings.web.metrics_max_age_s = 0.5
    other = Loopbot(loopbot.settings)
    other.engine = make_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        with TestClient(create_app(loopbot)) as first, TestClient(create_app(other)) as second:
            assert _replies_total(first) == _replies_total(second) == 0
            reply(other.engine, persona="coach", prompt="Asked through the other process", text="Answered",
                  version="coach-v1")
            deadline = time.monotonic() + 30
            while (_replies_total(first), _replies_total(second)) != (1, 1):
                assert time.monotonic() < deadline, "a process kept serving counts older than the age"
                time.sleep(0.1)
    finally:
        other.engine.dispose()
