"""serving.vllm.adapters_from = "store": the bots never load or unload adapters on the replicas (each replica's
`loopbot serve` does, from the artifact store); a router flips a persona to a version only once every replica lists
it, and keeps the old route (answering without a failed request) while any replica lacks it."""

from __future__ import annotations

import asyncio

import pytest

from loopbot.serving.base import SamplingParams
from loopbot.serving.errors import SwapFailed
from loopbot.serving.router import Router
from loopbot.serving.vllm import VllmBackend

GREEDY = SamplingParams(temperature=0.0, max_tokens=4)
ASK = [{"role": "user", "content": "hola"}]


def store_backend(*fakes, wait_s: float = 1.0) -> VllmBackend:
    return VllmBackend([f.url for f in fakes], adapters_from="store", adapter_wait_s=wait_s, poll_s=0.02)


async def test_a_version_is_routed_to_only_once_every_replica_holds_it(two_replicas, adapter_dir):
    a, b = two_replicas
    v1, v2 = adapter_dir("coach-v1"), adapter_dir("coach-v2")
    a.adapters["coach-v1"] = b.adapters["coach-v1"] = str(v1)  # what each `loopbot serve` loaded
    backend = store_backend(a, b)
    router = Router(backend, routes={"coach": ("coach-v1", "s3://bucket/adapters/coach/v1")}, unload_grace_s=0.1)
    try:
        await router.start()
        assert router.route("coach") == "coach-v1"
        a.adapters["coach-v2"] = str(v2)  # replica A's sync loaded v2, B's has not yet
        with pytest.raises(SwapFailed, match=rf"coach-v2.*{b.url}.*loopbot serve"):
            await router.swap("coach", "coach-v2", "s3://bucket/adapters/coach/v2")
        assert router.route("coach") == "coach-v1"
        text, _ = await router.complete("coach", ASK, sampling=GREEDY)
        assert text and "coach-v1" in text  # still answering, from the old version on both replicas

        async def b_catches_up():
            await asyncio.sleep(0.2)
            b.adapters["coach-v2"] = str(v2)

        backend.adapter_wait_s = 5.0
        _, result = await asyncio.gather(b_catches_up(), router.swap("coach", "coach-v2", "s3://x/coach/v2"))
        assert result.new == "coach-v2" and router.route("coach") == "coach-v2"
        await asyncio.sleep(0.3)
        await router.drain()
        assert a.loads == b.loads == [] and a.unloads == b.unloads == []  # the bots never load or unload
        assert "coach-v1" in a.adapters and "coach-v1" in b.adapters  # serve unloads it when no longer wanted
    finally:
        await router.aclose()
        await backend.aclose()


async def test_an_unreachable_replica_does_not_block_a_flip_on_the_others(two_replicas, adapter_dir):
    a, b = two_replicas
    a.adapters["coach-v2"] = str(adapter_dir("coach-v2"))
    await b.stop()
    backend = store_backend(a, b)
    try:
        await backend.load_adapter("coach-v2", "s3://bucket/adapters/coach/v2")  # returns: A holds it, B is away
        assert backend.desired == {"coach-v2": "s3://bucket/adapters/coach/v2"}
        assert await backend.resync() == {}  # nothing for the bots to re-load: each `loopbot serve` does
    finally:
        await backend.aclose()
