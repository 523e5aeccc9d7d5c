"""Fixtures for serving tests: fake vLLM replicas on loopback and LoRA adapter directories."""

from __future__ import annotations

import json

import pytest

from testkit.fake_vllm import FakeVllm


def write_adapter(path, rank: int = 8):
    """An adapter directory as vLLM's fake checks it (only adapter_config.json is read)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return path


@pytest.fixture
def adapter_dir(tmp_path):
    def make(name: str, rank: int = 8):
        return write_adapter(tmp_path / "adapters" / name, rank)
    return make


@pytest.fixture
async def fake_vllm():
    async with FakeVllm() as fake:
        yield fake


@pytest.fixture
async def two_replicas():
    async with FakeVllm() as a, FakeVllm() as b:
        yield a, b
