"""Router over fake vLLM replicas: routes, serialised hot swaps without dropped or mixed replies, grace, reconcile."""

from __future__ import annotations

import asyncio

import pytest

from loopbot.serving.base import SamplingParams
from loopbot.serving.errors import SwapFailed
from loopbot.serving.router import LIVE, Router
from loopbot.serving.vllm import VllmBackend
from testkit.fake_vllm import FakeVllm

HI = [{"role": "user", "content": "hello there"}]


async def test_routes_each_persona_to_its_adapter_and_counts_in_flight(fake_vllm, adapter_dir):
    fake_vllm.token_delay_s = 0.02
    router = Router(VllmBackend([fake_vllm.url]), routes={"coach": ("coach-v1", str(adapter_dir("c1"))),
                                                           "clone": None})
    try:
        text, fin = await router.complete("coach", HI)
        assert set(text.split()) == {"coach-v1"} and fin.served_model == "coach-v1"
        text, _ = await router.complete("clone", HI)
        assert set(text.split()) == {"base"}
        text, _ = await router.complete("coach", HI, adapter=None)  # explicit base, e.g. for an arena
        assert set(text.split()) == {"base"}
        stream = router.stream("coach", HI)
        await anext(stream)
        assert router.in_flight["coach-v1"] == 1
        await stream.aclose()
        assert router.in_flight["coach-v1"] == 0
        assert router.route("coach") == "coach-v1" and router.route("clone") is None and router.route("x") is None
    finally:
        await router.backend.aclose()


async def test_swap_under_load_drops_and_mixes_nothing(two_replicas, adapter_dir):
    a, b = two_replicas
    for fake in (a, b):
        fake.token_delay_s, fake.reply_words = 0.003, 8
    router = Router(VllmBackend([a.url, b.url]), unload_grace_s=10)
    paths = {v: str(adapter_dir(f"v{v}")) for v in range(1, 9)}
    await router.swap("coach", "coach-v1", paths[1])
    results, stop = [], asyncio.Event()

    async def user():
        while not stop.is_set():
            results.append(await router.complete("coach", HI, sampling=SamplingParams(max_tokens=50)))

    users = [asyncio.create_task(user()) for _ in range(6)]
    try:
        for v in range(2, 9):
            await asyncio.sleep(0.03)
            swapped = await router.swap("coach", f"coach-v{v}", paths[v])
            assert swapped.old == f"coach-v{v - 1}" and router.route("coach") == f"coach-v{v}"
        await asyncio.sleep(0.03)
    finally:
        stop.set()
        await asyncio.gather(*users)  # a failed request would raise here
    await router.drain()
    served = {fin.served_model for _, fin in results}
    assert len(served) >= 4, served  # the load really spanned several versions
    for text, fin in results:  # every reply came whole from one version
        assert text.split() == [fin.served_model] * 8 and fin.finish_reason == "stop"
    assert a.adapters == b.adapters == {"coach-v8": paths[8]}  # old versions unloaded everywhere
    assert sorted(a.unloads) == sorted(f"coach-v{v}" for v in range(1, 8))
    assert a.unloaded_in_use == b.unloaded_in_use == []  # each old version was unloaded only once idle
    await router.backend.aclose()


async def test_old_version_waits_for_its_requests_then_the_grace_period(fake_vllm, adapter_dir):
    fake_vllm.token_delay_s, fake_vllm.reply_words = 0.02, 60  # a 1.2 s reply
    router = Router(VllmBackend([fake_vllm.url]), unload_grace_s=0.3)
    await router.swap("coach", "coach-v1", str(adapter_dir("v1")))
    slow = asyncio.create_task(router.complete("coach", HI, sampling=SamplingParams(max_tokens=100)))
    await asyncio.sleep(0.1)
    await router.swap("coach", "coach-v2", str(adapter_dir("v2")))
    await asyncio.sleep(0.1)
    assert "coach-v1" in fake_vllm.adapters  # still in use: not unloaded
    await asyncio.sleep(0.4)
    assert "coach-v1" not in fake_vllm.adapters and not slow.done()  # grace over: unloaded anyway
    assert fake_vllm.unloaded_in_use == ["coach-v1"]
    await slow
    await router.backend.aclose()


async def test_a_failed_load_leaves_the_old_route(fake_vllm, adapter_dir):
    router = Router(VllmBackend([fake_vllm.url]))
    await router.swap("coach", "coach-v1", str(adapter_dir("v1")))
    with pytest.raises(SwapFailed, match=r"max_lora_rank.*stays on coach-v1"):
        await router.swap("coach", "coach-v2", str(adapter_dir("v2", rank=64)))
    with pytest.raises(SwapFailed, match="No adapter found"):
        await router.swap("coach", "coach-v3", str(adapter_dir("v3") / "nothing-here"))
    assert router.route("coach") == "coach-v1" and set(fake_vllm.adapters) == {"coach-v1"}
    text, _ = await router.complete("coach", HI)
    assert text.startswith("coach-v1")
    await router.backend.aclose()


async def test_a_failed_smoke_test_unloads_the_new_version_and_keeps_the_old(fake_vllm, adapter_dir):
    router = Router(VllmBackend([fake_vllm.url]))
    await router.swap("coach", "coach-v1", str(adapter_dir("v1")))
    fake_vllm.fail_chats_with = 500
    with pytest.raises(SwapFailed, match="smoke test of coach-v2 failed"):
        await router.swap("coach", "coach-v2", str(adapter_dir("v2")))
    fake_vllm.fail_chats_with = None
    assert router.route("coach") == "coach-v1" and set(fake_vllm.adapters) == {"coach-v1"}
    await router.backend.aclose()


async def test_a_failed_load_on_one_replica_keeps_every_replica_on_the_old_version(adapter_dir):
    async with FakeVllm(max_lora_rank=64) as a, FakeVllm(max_lora_rank=8) as b:
        router = Router(VllmBackend([a.url, b.url]))
        await router.swap("coach", "coach-v1", str(adapter_dir("v1")))
        with pytest.raises(SwapFailed, match=b.url):
            await router.swap("coach", "coach-v2", str(adapter_dir("v2", rank=32)))
        assert set(a.adapters) == set(b.adapters) == {"coach-v1"} and router.route("coach") == "coach-v1"
        await router.backend.aclose()


async def test_swaps_are_serialised(fake_vllm, adapter_dir):
    router = Router(VllmBackend([fake_vllm.url]), unload_grace_s=0)
    paths = [str(adapter_dir(f"v{v}")) for v in range(5)]
    await asyncio.gather(*[router.swap("coach", f"coach-v{v}", paths[v]) for v in range(5)])
    await router.drain()
    assert router.route("coach") == "coach-v4" and set(fake_vllm.adapters) == {"coach-v4"}
    assert fake_vllm.loads == [f"coach-v{v}" for v in range(5)]
    await router.backend.aclose()


async def test_rollback_during_the_grace_period_keeps_the_old_version_loaded(fake_vllm, adapter_dir):
    fake_vllm.token_delay_s, fake_vllm.reply_words = 0.02, 20
    router = Router(VllmBackend([fake_vllm.url]), unload_grace_s=5)
    await router.swap("coach", "coach-v1", str(adapter_dir("v1")))
    held = asyncio.create_task(router.complete("coach", HI, sampling=SamplingParams(max_tokens=50)))
    await asyncio.sleep(0.05)
    await router.swap("coach", "coach-v2", str(adapter_dir("v2")))
    await router.swap("coach", "coach-v1", str(adapter_dir("v1")))  # rollback while v1 is still retiring
    await held
    await router.drain()
    assert router.route("coach") == "coach-v1" and set(fake_vllm.adapters) == {"coach-v1"}
    assert fake_vllm.loads.count("coach-v1") == 1  # never unloaded and reloaded
    assert set(router.backend.desired) == {"coach-v1"}  # what a re-sync restores after a vLLM restart
    await router.swap("coach", None)  # back to the base model
    await router.drain()
    assert router.route("coach") is None and fake_vllm.adapters == {}
    await router.backend.aclose()


async def test_reconcile_loads_what_is_missing_and_reports_what_cannot_load(fake_vllm, adapter_dir):
    router = Router(VllmBackend([fake_vllm.url]), unload_grace_s=0)
    await router.swap("comedian", "comedian-v1", str(adapter_dir("m1")))
    routes = await router.reconcile({"coach": ("coach-v3", str(adapter_dir("v3"))), "clone": None,
                                     "comedian": ("comedian-v2", str(adapter_dir("m2") / "gone"))})
    assert routes == {"coach": "coach-v3", "clone": None, "comedian": "comedian-v1"}
    assert "comedian" in router.problems and "No adapter found" in router.problems["comedian"]
    await fake_vllm.restart()
    await router.reconcile({"coach": ("coach-v3", str(adapter_dir("v3"))), "comedian": None})
    await router.drain()
    assert set(fake_vllm.adapters) == {"coach-v3"} and router.route("comedian") is None
    text, finished = await router.complete("coach", HI, adapter=LIVE)  # users get the reconciled versions
    assert set(text.split()) == {"coach-v3"} and finished.served_model == "coach-v3"
    text, _ = await router.complete("comedian", HI)
    assert set(text.split()) == {"base"}
    await router.backend.aclose()
    await router.backend.aclose()
