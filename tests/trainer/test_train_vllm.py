"""A trained adapter (LoRA r16 on every linear layer, as config.toml trains) loads into the real vLLM-on-CPU server
at runtime and answers like transformers + peft. Slow: one vLLM start (~40 s)."""

from __future__ import annotations

import asyncio

import pytest

from loopbot.serving.base import SamplingParams, complete
from loopbot.serving.local import LocalBackend
from loopbot.serving.vllm import VllmBackend
from loopbot.serving.vllm_server import VllmServer
from loopbot.trainer.launch import train_new_version
from testkit.ports import free_port
from testkit.tiny_model import build_tiny_model
from tests.trainer.synthetic import write_dataset

pytestmark = pytest.mark.slow
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=12)
ASK = [{"role": "user", "content": "How should I pace my first marathon?"}]


async def test_a_trained_adapter_serves_from_real_vllm(loopbot, tmp_path):
    model = build_tiny_model(tmp_path / "model-128", hidden=128)  # vLLM's CPU attention needs head_dim >= 32
    data = write_dataset(tmp_path / "ds")
    trained = await train_new_version(loopbot.engine, loopbot.settings, "coach", dataset_dir=data, base_model=model,
                                      method="sft+dpo", start_adapter=None, parent_version=None)
    server = VllmServer(model, served_name="tiny", port=free_port(), max_lora_rank=loopbot.settings.trainer.lora.r,
                        max_loras=2, max_model_len=512, log_path=tmp_path / "vllm.log")
    server.start()
    backend = VllmBackend([server.url], timeout_s=60, resync_interval_s=3600)
    try:
        await asyncio.to_thread(server.wait_ready, 300)
        await backend.load_adapter("coach-v1", str(trained.path))
        served, finished = await complete(backend, ASK, adapter="coach-v1", sampling=GREEDY)
        base, _ = await complete(backend, ASK, adapter=None, sampling=GREEDY)
        assert finished.completion_tokens > 0 and served != base
        local = LocalBackend(model, device="cpu")
        await local.load_adapter("coach-v1", str(trained.path))
        local_text = (await complete(local, ASK, adapter="coach-v1", sampling=GREEDY))[0]
        await local.aclose()
        assert local_text.rstrip("\ufffd") == served.rstrip("\ufffd")
    finally:
        await backend.aclose()
        await asyncio.to_thread(server.stop)
