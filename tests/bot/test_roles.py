"""`loopbot run --only ROLES`: each role starts alone (docs/deploying.md#several-hosts). A web-only process builds no
serving backend; a bots-only process (no scheduler beside it) still follows promotions and rollbacks made by other
processes; unknown roles and a worker without the job queue are refused with one line."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from loopbot.app import Loopbot
from loopbot.base.config import load_settings
from loopbot.cli import main
from loopbot.runtime import serve_all
from loopbot.storage import crud
from testkit.fake_vllm import FakeVllm
from testkit.ports import free_port
from tests.serving.conftest import write_adapter

ROOT = Path(__file__).resolve().parents[2]


def settings_for(tmp_path, **overrides):
    return load_settings(ROOT / "config.toml", env={}, check_secrets=False, overrides={
        "data_dir": str(tmp_path / "data"), "web.port": free_port(), "telegram.enabled": False,
        "discord.enabled": False, **overrides})


async def run_until(loopbot, roles, until, limit_s: float = 20.0) -> list[str]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve_all(loopbot, stop=stop, env={}, roles=roles))
    try:
        await asyncio.wait_for(until(), limit_s)
    finally:
        stop.set()
    return await asyncio.wait_for(task, 30)


async def test_web_alone_builds_no_serving_backend_and_no_bots(tmp_path):
    import httpx

    loopbot = Loopbot(settings_for(tmp_path))

    async def web_answers():
        async with httpx.AsyncClient(trust_env=False) as http:
            while True:
                try:
                    if (await http.get(f"http://127.0.0.1:{loopbot.settings.web.port}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)

    parts = await run_until(loopbot, {"web"}, web_answers)
    assert parts == ["web"]
    assert "backend" not in vars(loopbot) and "router" not in vars(loopbot)


async def test_bots_alone_follow_a_promotion_made_by_another_process(tmp_path):
    async with FakeVllm(model="smollm2") as vllm:
        loopbot = Loopbot(settings_for(tmp_path, **{"serving.backend": "vllm", "serving.vllm.urls": [vllm.url],
                                                    "serving.reconcile_interval_s": 0.2}))
        path = write_adapter(tmp_path / "adapters" / "coach-v1")
        other = Loopbot(loopbot.settings)  # e.g. a worker on another host: only the database changes
        crud.create_adapter(other.engine, persona="coach", version=1, base_model="smollm2", path=str(path))
        _ = loopbot.router  # the bots' router, as a chat would build it

        async def promoted_then_routed():
            await asyncio.sleep(0.3)
            crud.activate_adapter(other.engine, persona="coach", version=1)
            for _ in range(400):
                if loopbot.router.route("coach") == "coach-v1":
                    return
                await asyncio.sleep(0.05)

        parts = await run_until(loopbot, {"bots"}, promoted_then_routed)
        assert parts == ["serving", "routes"]
        assert vllm.loads == ["coach-v1"]
        other.engine.dispose()
        loopbot.engine.dispose()


@pytest.mark.parametrize(("only", "message"), [
    ("bots,gpu", "--only 'bots,gpu': expected a comma-separated list of bots, web, scheduler, worker"),
    ("worker", "the worker role takes training jobs from the PostgreSQL job queue, which is off"),
])
def test_unknown_roles_and_a_worker_without_the_queue_are_refused(tmp_path, monkeypatch, capsys, only, message):
    monkeypatch.setenv("LOOPBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(ROOT / "config.toml"), "run", "--only", only]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(("overrides", "env", "message"), [
    ({"telegram.webhook_reuse_port": True}, {"TELEGRAM_WEBHOOK_SECRET": "s" * 32},
     "webhook_reuse_port = true needs [shared] redis_url"),
    ({"shared.redis_url": "redis://127.0.0.1:6379/0"}, {},
     "set TELEGRAM_WEBHOOK_SECRET (telegram.webhook_secret_env): the processes that serve one webhook must share"),
])
async def test_several_webhook_processes_are_refused_without_what_they_must_share(tmp_path, overrides, env, message):
    from loopbot.base.errors import ConfigError

    settings = settings_for(tmp_path, **{"telegram.enabled": True, "telegram.mode": "webhook",
                                         "telegram.webhook_url": "https://bots.example.org/tg", **overrides})
    loopbot = Loopbot(settings)
    with pytest.raises(ConfigError, match=re.escape(message)):
        await serve_all(loopbot, stop=asyncio.Event(), env={"TELEGRAM_BOT_TOKEN": "123456:TEST-token", **env},
                        roles={"bots"})
    loopbot.engine.dispose()
