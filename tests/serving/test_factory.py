"""The composition root builds the configured backend, and a router that serves the DB's active adapters."""

from __future__ import annotations

import pytest

from loopbot.app import Loopbot
from loopbot.serving.errors import BackendUnavailable
from loopbot.serving.factory import build_backend
from loopbot.serving.local import LocalBackend
from loopbot.serving.mistral import MistralBackend
from loopbot.serving.vllm import VllmBackend
from loopbot.storage import crud


def test_backend_kinds_follow_the_config(settings, monkeypatch):
    local = build_backend(settings)
    assert isinstance(local, LocalBackend) and local.model_name == "smollm2" and local.model is None  # lazy
    settings.serving.vllm.urls = ["http://127.0.0.1:8001", "http://127.0.0.1:8002/"]
    vllm = build_backend(settings, kind="vllm")
    assert isinstance(vllm, VllmBackend) and [r.url for r in vllm.replicas] == ["http://127.0.0.1:8001",
                                                                                 "http://127.0.0.1:8002"]
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    with pytest.raises(BackendUnavailable, match="MISTRAL_API_KEY"):
        build_backend(settings, kind="mistral")
    monkeypatch.setenv("MISTRAL_API_KEY", "k")
    assert isinstance(build_backend(settings, kind="mistral"), MistralBackend)


async def test_loopbot_router_serves_the_active_adapters_from_the_database(settings, fake_vllm, adapter_dir):
    settings.serving.backend = "vllm"
    settings.serving.vllm.urls = [fake_vllm.url]
    loopbot = Loopbot(settings)
    crud.create_adapter(loopbot.engine, persona="coach", version=1, base_model="smollm2", path=str(adapter_dir("1")))
    crud.create_adapter(loopbot.engine, persona="coach", version=2, base_model="smollm2", path=str(adapter_dir("2")))
    crud.activate_adapter(loopbot.engine, persona="coach", version=2)
    router = loopbot.router
    assert router is loopbot.router and router.backend is loopbot.backend
    text, finished = await router.complete("coach", [{"role": "user", "content": "hi"}])
    assert finished.served_model == "coach-v2" and set(text.split()) == {"coach-v2"}
    assert fake_vllm.adapters == {"coach-v2": str(adapter_dir("2"))}
    assert router.route("comedian") is None and router.route("clone") is None
    await loopbot.backend.aclose()
