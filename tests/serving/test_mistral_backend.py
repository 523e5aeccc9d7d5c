"""MistralBackend with the real `mistralai` client against a loopback fake of Mistral's chat endpoint."""

from __future__ import annotations

import pytest

from loopbot.serving.base import SamplingParams, TextChunk, complete
from loopbot.serving.errors import BackendUnavailable, BadRequest, ModelNotFound, Overloaded, SwapFailed
from loopbot.serving.mistral import MistralBackend
from loopbot.serving.router import Router
from testkit.fake_mistral import FakeMistral

HI = [{"role": "user", "content": "hola como estas"}]
FT = "ft:open-mistral-7b:abc123:coach:v8"


@pytest.fixture
async def fake_mistral():
    async with FakeMistral(models=("open-mistral-7b", FT)) as fake:
        yield fake


def backend_for(fake, **kw) -> MistralBackend:
    return MistralBackend(api_key="test-key", server_url=fake.url, **kw)


async def test_streams_from_the_base_model_with_sampling_settings(fake_mistral):
    backend = backend_for(fake_mistral)
    items = [i async for i in backend.stream(HI, sampling=SamplingParams(temperature=0.3, top_p=0.8,
                                                                         max_tokens=40, seed=7))]
    await backend.aclose()
    assert [i.text for i in items if isinstance(i, TextChunk)] == ["open-mistral-7b"] + [" open-mistral-7b"] * 3
    assert items[-1].finish_reason == "stop" and items[-1].completion_tokens == 4 and items[-1].prompt_tokens == 3
    sent = fake_mistral.requests[-1]
    assert sent["stream"] is True and sent["temperature"] == 0.3 and sent["top_p"] == 0.8
    assert sent["max_tokens"] == 40 and sent["random_seed"] == 7 and sent["messages"] == HI


async def test_an_adapter_name_maps_to_its_fine_tuned_model(fake_mistral):
    backend = backend_for(fake_mistral)
    await backend.load_adapter("coach-v8", FT)
    text, finished = await complete(backend, HI, adapter="coach-v8", sampling=SamplingParams(max_tokens=2))
    assert set(text.split()) == {FT} and finished.served_model == "coach-v8" and finished.finish_reason == "length"
    assert [a.name for a in await backend.list_adapters()] == ["coach-v8"]
    await backend.unload_adapter("coach-v8")
    with pytest.raises(ModelNotFound):
        await complete(backend, HI, adapter="coach-v8")
    await backend.aclose()


async def test_errors_are_typed(fake_mistral):
    backend = backend_for(fake_mistral)
    await backend.load_adapter("coach-v9", "ft:open-mistral-7b:abc123:coach:v9")  # not on the server
    with pytest.raises(ModelNotFound, match="Invalid model"):
        await complete(backend, HI, adapter="coach-v9")
    with pytest.raises(BadRequest):
        await complete(backend, [])
    fake_mistral.fail_with = 429
    with pytest.raises(Overloaded):
        await complete(backend, HI)
    fake_mistral.fail_with = None
    wrong_key = MistralBackend(api_key="nope", server_url=fake_mistral.url)
    with pytest.raises(BackendUnavailable, match="api_key_env"):
        await complete(wrong_key, HI)
    dead = MistralBackend(api_key="k", server_url="http://127.0.0.1:9")
    with pytest.raises(BackendUnavailable):
        await complete(dead, HI)
    for b in (backend, wrong_key, dead):
        await b.aclose()


async def test_router_swaps_a_persona_to_a_fine_tuned_model_after_a_smoke_test(fake_mistral):
    router = Router(backend_for(fake_mistral))
    with pytest.raises(SwapFailed, match="smoke test"):
        await router.swap("coach", "coach-v7", "ft:open-mistral-7b:abc123:coach:v7")  # unknown to the server
    assert router.route("coach") is None
    await router.swap("coach", "coach-v8", FT)
    text, finished = await router.complete("coach", HI)
    assert set(text.split()) == {FT} and finished.served_model == "coach-v8"
    await router.backend.aclose()
