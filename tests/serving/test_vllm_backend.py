"""VllmBackend against loopback fakes of vLLM: streaming, typed errors, replicas, adapter loads, re-sync."""

from __future__ import annotations

import asyncio

import pytest

from loopbot.serving.base import Finished, SamplingParams, TextChunk, complete
from loopbot.serving.errors import BackendUnavailable, BadRequest, GenerationTimeout, ModelNotFound, Overloaded
from loopbot.serving.vllm import VllmBackend
from testkit.fake_vllm import FakeVllm

HI = [{"role": "user", "content": "hello there"}]


async def test_streams_text_then_usage_from_the_base_model(fake_vllm):
    backend = VllmBackend([fake_vllm.url])
    try:
        items = [item async for item in backend.stream(HI, sampling=SamplingParams(max_tokens=50))]
    finally:
        await backend.aclose()
    chunks = [i for i in items if isinstance(i, TextChunk)]
    assert "".join(c.text for c in chunks) == "base base base base base"
    assert len(chunks) == 5  # streamed, not one block
    assert items[-1] == Finished("stop", 2, 5, "base")


async def test_max_tokens_reached_reports_length(fake_vllm):
    backend = VllmBackend([fake_vllm.url])
    text, finished = await complete(backend, HI, sampling=SamplingParams(max_tokens=2))
    await backend.aclose()
    assert text == "base base" and finished.finish_reason == "length"


async def test_errors_are_typed(fake_vllm, adapter_dir):
    backend = VllmBackend([fake_vllm.url], timeout_s=0.3)
    try:
        with pytest.raises(ModelNotFound, match="does not exist"):
            await complete(backend, HI, adapter="nobody-v1")
        with pytest.raises(BadRequest):
            await complete(backend, [])
        for status in (429, 503):
            fake_vllm.fail_chats_with = status
            with pytest.raises(Overloaded):
                await complete(backend, HI)
        fake_vllm.fail_chats_with = None
        fake_vllm.token_delay_s = 1.0
        with pytest.raises(GenerationTimeout):
            await complete(backend, HI)
        fake_vllm.token_delay_s = 0.0
        with pytest.raises(ModelNotFound, match="No adapter found"):
            await backend.load_adapter("coach-v1", str(adapter_dir("x") / "missing"))
        with pytest.raises(BadRequest, match="same name as the base"):
            await backend.load_adapter("base", str(adapter_dir("y")))
        assert await backend.list_adapters() == []
    finally:
        await backend.aclose()
    dead = VllmBackend(["http://127.0.0.1:9"], model="base")
    with pytest.raises(BackendUnavailable):
        await complete(dead, HI)
    with pytest.raises(BackendUnavailable):
        await dead.load_adapter("coach-v1", str(adapter_dir("z")))
    await dead.aclose()
    for error in (ModelNotFound, Overloaded, GenerationTimeout, BackendUnavailable, BadRequest):
        assert error.user_message and "HTTP" not in error.user_message


async def test_adapter_loads_reach_every_replica_and_chat_uses_them(two_replicas, adapter_dir):
    a, b = two_replicas
    backend = VllmBackend([a.url, b.url])
    try:
        await backend.load_adapter("coach-v1", str(adapter_dir("v1")))
        assert a.adapters == b.adapters == {"coach-v1": str(adapter_dir("v1"))}
        assert [x.name for x in await backend.list_adapters()] == ["coach-v1"]
        text, finished = await complete(backend, HI, adapter="coach-v1")
        assert set(text.split()) == {"coach-v1"} and finished.served_model == "coach-v1"
        await backend.load_adapter("coach-v1", str(adapter_dir("v1")))  # idempotent: already there is fine
        await backend.unload_adapter("coach-v1")
        assert a.adapters == b.adapters == {}
        with pytest.raises(ModelNotFound):
            await backend.unload_adapter("coach-v1")
    finally:
        await backend.aclose()


async def test_a_failed_load_on_one_replica_is_undone_on_the_others(adapter_dir):
    async with FakeVllm(max_lora_rank=64) as a, FakeVllm(max_lora_rank=8) as b:
        backend = VllmBackend([a.url, b.url])
        with pytest.raises(Exception, match="greater than max_lora_rank"):
            await backend.load_adapter("coach-v2", str(adapter_dir("big", rank=32)))
        assert a.adapters == {} and b.adapters == {} and a.loads == ["coach-v2"] and a.unloads == ["coach-v2"]
        assert "coach-v2" not in backend.desired
        await backend.aclose()


async def test_requests_are_balanced_across_replicas(two_replicas):
    a, b = two_replicas
    a.token_delay_s = b.token_delay_s = 0.01
    backend = VllmBackend([a.url, b.url])
    await asyncio.gather(*[complete(backend, HI) for _ in range(10)])
    await backend.aclose()
    assert len(a.chats) + len(b.chats) == 10
    assert len(a.chats) >= 3 and len(b.chats) >= 3


async def test_a_dead_replica_is_skipped_and_a_restarted_one_is_resynced(two_replicas, adapter_dir):
    a, b = two_replicas
    backend = VllmBackend([a.url, b.url], resync_interval_s=3600)
    try:
        await backend.load_adapter("coach-v1", str(adapter_dir("v1")))
        await b.stop()
        for _ in range(4):  # every request still answered, by the live replica
            text, _ = await complete(backend, HI, adapter="coach-v1")
            assert text.startswith("coach-v1")
        assert not backend.replicas[1].healthy
        await backend.load_adapter("coach-v2", str(adapter_dir("v2")))  # b is down: loaded on a, b later
        assert set(a.adapters) == {"coach-v1", "coach-v2"}
        b.adapters.clear()  # a restarted vLLM has forgotten its runtime adapters
        await b.start()
        loaded = await backend.resync()
        assert sorted(loaded[b.url]) == ["coach-v1", "coach-v2"]
        assert set(b.adapters) == {"coach-v1", "coach-v2"} and backend.replicas[1].healthy
        assert await backend.resync() == {}  # nothing missing any more
    finally:
        await backend.aclose()


async def test_periodic_resync_reloads_after_a_restart(fake_vllm, adapter_dir):
    backend = VllmBackend([fake_vllm.url], resync_interval_s=0.05)
    try:
        await backend.load_adapter("coach-v1", str(adapter_dir("v1")))
        await fake_vllm.restart()
        assert fake_vllm.adapters == {}
        for _ in range(100):
            if fake_vllm.adapters:
                break
            await asyncio.sleep(0.02)
        assert fake_vllm.adapters == {"coach-v1": str(adapter_dir("v1"))}
    finally:
        await backend.aclose()


async def test_cancelling_a_stream_closes_the_request(fake_vllm):
    fake_vllm.token_delay_s = 0.05
    fake_vllm.reply_words = 100
    backend = VllmBackend([fake_vllm.url])
    stream = backend.stream(HI)
    got = [await anext(stream) for _ in range(2)]
    await stream.aclose()
    assert all(isinstance(g, TextChunk) for g in got)
    for _ in range(50):
        if fake_vllm.in_flight.get("base") == 0:
            break
        await asyncio.sleep(0.02)
    assert fake_vllm.in_flight["base"] == 0
    assert backend.replicas[0].in_flight == 0
    await backend.aclose()
