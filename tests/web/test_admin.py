"""The admin dashboard: closed without the token, and promote / roll back with a confirmation step."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from fastapi.testclient import TestClient

from loopbot.storage import crud
from loopbot.trainer import registry
from loopbot.web.app import create_app
from tests.web.conftest import ADMIN_TOKEN
from tests.web.forms import hidden_fields
from tests.web.seed import adapter_dir, arena_world


def _login(client, token=ADMIN_TOKEN):
    return client.post("/admin/login", data={"token": token}, follow_redirects=False)


def test_admin_refuses_without_a_token(client, loopbot):
    arena_world(loopbot)
    r = client.get("/admin")
    assert r.status_code == 401 and "coach-v2" not in r.text and 'name="token"' in r.text
    r = client.post("/admin/coach/rollback", data={"confirm": "yes"})
    assert r.status_code == 401
    assert crud.active_adapter(loopbot.engine, persona="coach").version == 2


def test_admin_refuses_a_wrong_token(client, loopbot):
    arena_world(loopbot)
    r = _login(client, "wrong-token")
    assert r.status_code == 401 and "wrong token" in r.text and "loopbot_admin" not in r.cookies
    assert client.get("/admin").status_code == 401
    bearer = client.get("/admin", headers={"authorization": "Bearer wrong-token"})
    assert bearer.status_code == 401
    forged = client.get("/admin", cookies={"loopbot_admin": "99999999999.x.forged"})
    assert forged.status_code == 401


def test_admin_is_closed_when_the_token_variable_is_unset(loopbot, monkeypatch):
    monkeypatch.delenv(loopbot.settings.web.admin_token_env, raising=False)
    with TestClient(create_app(loopbot), headers={"accept": "text/html"}) as c:
        r = c.get("/admin")
        assert r.status_code == 503 and "LOOPBOT_ADMIN_TOKEN" in r.text
        assert _login(c, "").status_code == 503
        assert _login(c, "anything").status_code == 503


def test_a_session_ends_when_the_token_changes(client, loopbot, monkeypatch):
    assert _login(client).status_code == 303
    assert client.get("/admin").status_code == 200
    monkeypatch.setenv(loopbot.settings.web.admin_token_env, "a-new-token-after-a-leak")
    assert client.get("/admin").status_code == 401


def test_dashboard_shows_live_version_lineage_runs_and_consent_counts(client, loopbot):
    eng = loopbot.engine
    arena_world(loopbot)
    run = crud.start_training_run(eng, persona="coach", trigger="cron", method="sft+dpo")
    checks = [{"name": "perplexity", "passed": False, "detail": "held-out perplexity rose 25% > 10%"},
              {"name": "cutoff_rate", "passed": True, "detail": "0.02 vs 0.03"}]
    crud.add_run_step(eng, run_id=run.id, step="gate", outcome="rejected", checks=checks)
    crud.finish_training_run(eng, run_id=run.id, status="rejected", error="perplexity: held-out perplexity rose",
                             metrics={"candidate": {"perplexity": 12.5, "preference_accuracy": 0.61},
                                      "live": {"perplexity": 10.0, "preference_accuracy": None}, "judge": None,
                                      "gate": {"passed": False}},
                             dataset_sizes={"sft": 40, "dpo": 9}, candidate_version=3)
    user = crud.get_or_create_user(eng, platform="telegram", platform_user_id="u0")
    crud.set_consent(eng, user_id=user.id, consent=False)
    crud.forget_user(eng, user_id=user.id)
    assert _login(client).status_code == 303
    page = client.get("/admin").text
    coach = page.split('id="coach"')[1].split('<section class="persona"')[0]
    assert '<strong class="live-version">coach-v2</strong>' in coach
    assert "Roll back to v1" in coach
    assert "gate: rejected" in coach and "✗ perplexity: held-out perplexity rose 25% &gt; 10%" in coach
    assert "cutoff_rate" not in coach  # only the checks that failed
    flat = " ".join(coach.split())
    assert "candidate: perplexity=12.5, preference_accuracy=0.61 </div>" in flat
    assert "live: perplexity=10 </div>" in flat and "judge:" not in flat
    assert "dpo 9" in coach and "v3" in coach
    assert "coach-v1" in coach and "retired" in coach
    assert "consent withdrawn: <strong>1</strong>" in page and "forget requests: <strong>1</strong>" in page


def test_rollback_asks_for_confirmation_then_restores_the_previous_version(client, loopbot):
    arena_world(loopbot)
    _login(client)
    form = hidden_fields(client.get("/admin").text, "/admin/coach/rollback")
    ask = client.post("/admin/coach/rollback", data=form)
    assert ask.status_code == 200 and "Roll coach back to coach-v1?" in ask.text
    assert crud.active_adapter(loopbot.engine, persona="coach").version == 2  # nothing changed yet
    done = client.post("/admin/coach/rollback", data=hidden_fields(ask.text))
    assert done.status_code == 200 and "rolled back coach to v1" in done.text
    assert crud.active_adapter(loopbot.engine, persona="coach").version == 1
    assert crud.get_adapter(loopbot.engine, persona="coach", version=2).status == "rolled_back"


@pytest.mark.parametrize(("later", "parent", "expected"), [
    ([3], 1, "coach-v2"),  # v3 was trained from v1, but v2 was live when v3 came
    ([None, 3], 2, None),  # v2 was rolled back to the base model, and v3 (trained from v2) came after that
], ids=["lineage-is-not-history", "base-served-before"])
def test_the_dashboard_and_the_cli_roll_back_to_the_same_version(client, loopbot, later, parent, expected):
    arena_world(loopbot)  # v1, then v2 (from v1), activated in turn
    crud.create_adapter(loopbot.engine, persona="coach", version=3, base_model="tiny",
                        path=adapter_dir(loopbot, "coach", 3), parent_version=parent)
    for version in later:
        crud.activate_adapter(loopbot.engine, persona="coach", version=version,
                              previous_status="retired" if version else "rolled_back")
    _login(client)
    label = expected.removeprefix("coach-") if expected else "base model"
    assert f"Roll back to {label}" in client.get("/admin").text
    ask = client.post("/admin/coach/rollback", data=hidden_fields(client.get("/admin").text, "/admin/coach/rollback"))
    assert f"Roll coach back to {expected or 'the base model'}?" in ask.text
    loopbot.settings.trainer.gate.watch_votes = 10
    assert registry.watch_verdict(loopbot.engine, loopbot.settings, "coach").previous_version == \
        (int(expected[-1]) if expected else None)  # the live watch compares with the same version
    target = asyncio.run(registry.rollback(loopbot, "coach", reason="from the command line"))  # CLI and bots
    assert (target.name if target else None) == expected


def test_promote_needs_the_form_token_and_confirmation(client, loopbot):
    arena_world(loopbot)
    _login(client)
    r = client.post("/admin/coach/promote", data={"version": "1", "confirm": "yes"})
    assert r.status_code == 403
    form = hidden_fields(client.get("/admin").text, "/admin/coach/promote")
    assert form["version"] == "1"
    ask = client.post("/admin/coach/promote", data=form)
    assert "Make coach-v1 the live version" in ask.text
    done = client.post("/admin/coach/promote", data=hidden_fields(ask.text))
    assert done.status_code == 200 and "coach-v1 is live" in done.text
    assert crud.active_adapter(loopbot.engine, persona="coach").version == 1


def test_rollback_with_nothing_live_says_so(client):
    _login(client)
    page = client.get("/admin").text
    assert "Roll back to" not in page  # no button while the base model answers
    csrf = client.app.state.signer.csrf_token("admin:" + client.cookies.get("loopbot_admin"))
    r = client.post("/admin/coach/rollback", data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 409 and "nothing to roll back" in r.text


def test_promote_refuses_a_version_whose_files_are_gone(client, loopbot):
    arena_world(loopbot)
    shutil.rmtree(loopbot.settings.adapters_dir / "coach" / "v1")
    _login(client)
    ask = client.post("/admin/coach/promote", data=hidden_fields(client.get("/admin").text, "/admin/coach/promote"))
    r = client.post("/admin/coach/promote", data=hidden_fields(ask.text))
    assert r.status_code == 409 and "no adapter files" in r.text
    assert crud.active_adapter(loopbot.engine, persona="coach").version == 2


def test_login_attempts_are_rate_limited(client):
    codes = [_login(client, f"guess-{i}").status_code for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]


BEARER = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_wrong_bearer_tokens_count_against_the_login_limit(client):
    codes = [client.get("/admin", headers={"authorization": f"Bearer guess-{i}"}).status_code for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    # the same per-address budget as the login form; over it even the right token waits (no oracle for guesses)
    assert _login(client).status_code == 429
    r = client.get("/admin", headers=BEARER)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "loopbot_admin" not in client.cookies


def test_the_right_bearer_token_is_not_counted(client):
    assert [client.get("/admin", headers=BEARER).status_code for _ in range(12)] == [200] * 12
    assert _login(client).status_code == 303


def test_a_session_cookie_replayed_after_logout_is_refused(client, loopbot):
    from loopbot.web.app import create_app

    assert _login(client).status_code == 303
    cookie = client.cookies.get("loopbot_admin")
    with TestClient(create_app(loopbot), headers={"accept": "text/html"}) as other:  # a second admin (process)
        assert _login(other).status_code == 303
        assert client.post("/admin/logout", follow_redirects=False).status_code == 303
        assert other.get("/admin").status_code == 200  # only the session that logged out ends
    client.cookies.clear()
    client.cookies.set("loopbot_admin", cookie, path="/admin")
    r = client.get("/admin")
    assert r.status_code == 401 and 'name="token"' in r.text
    assert client.post("/admin/coach/rollback", data={"confirm": "yes"}).status_code == 401


def test_a_confirmed_action_cannot_be_replayed(client, loopbot):
    eng = loopbot.engine
    arena_world(loopbot)
    _login(client)
    ask = client.post("/admin/coach/promote", data=hidden_fields(client.get("/admin").text, "/admin/coach/promote"))
    confirm = hidden_fields(ask.text)
    assert client.post("/admin/coach/promote", data=confirm).status_code == 200
    assert crud.active_adapter(eng, persona="coach").version == 1
    crud.activate_adapter(eng, persona="coach", version=2)  # someone made v2 live again meanwhile
    again = client.post("/admin/coach/promote", data=confirm)
    assert again.status_code == 409 and "already used" in again.text
    assert crud.active_adapter(eng, persona="coach").version == 2
    # a confirmation is for its own action only
    ask = client.post("/admin/coach/promote", data=hidden_fields(client.get("/admin").text, "/admin/coach/promote"))
    other = client.post("/admin/coach/rollback", data=hidden_fields(ask.text))
    assert other.status_code == 409 and crud.active_adapter(eng, persona="coach").version == 2
    assert client.post("/admin/coach/promote", data={**hidden_fields(ask.text), "version": "2"}).status_code == 409
    assert client.post("/admin/coach/promote", data=hidden_fields(ask.text)).status_code == 200
    assert crud.active_adapter(eng, persona="coach").version == 1


def test_run_refuses_a_short_admin_token(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    def cli(*args, **env_extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPBOT_")}
        return subprocess.run([sys.executable, "-m", "loopbot.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env={**env, **env_extra}, timeout=60)

    assert cli("init", str(tmp_path / "bot")).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    try:
        r = cli("--config", str(tmp_path / "bot" / "config.toml"), "run", LOOPBOT_ADMIN_TOKEN="short-token-1234",
                LOOPBOT_WEB__PORT=port, LOOPBOT_SCHEDULE__ENABLED="false")
    except subprocess.TimeoutExpired:
        raise AssertionError("`loopbot run` started with a 16-character admin token") from None
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "LOOPBOT_ADMIN_TOKEN" in line and "24" in line and "short-token-1234" not in line
