"""The chat core through the real Router and LocalBackend with the tiny model: a stored, streamed reply from the
persona's live adapter, and an arena round between the adapter and the base model."""

from __future__ import annotations

import random

import pytest

from loopbot.bot.chat import ChatService
from loopbot.storage import crud
from tests.bot.conftest import dm, final, press


@pytest.fixture
async def local_router(tiny_model_dir, tiny_adapters):
    from loopbot.serving.local import LocalBackend
    from loopbot.serving.router import Router

    backend = LocalBackend(tiny_model_dir, device="cpu", dtype="float32", max_batch_size=4, batch_wait_ms=1)
    router = Router(backend, routes={"coach": ("coach-v1", str(tiny_adapters["a"]))}, smoke_max_tokens=2)
    yield router
    await backend.aclose()


async def test_a_reply_from_the_live_adapter_is_stored(sqlite_engine, settings, local_router, tiny_adapters):
    crud.create_adapter(sqlite_engine, persona="coach", version=1, base_model="smollm2",
                        path=str(tiny_adapters["a"]))
    crud.activate_adapter(sqlite_engine, persona="coach", version=1)
    settings = settings.model_copy(deep=True)
    settings.personas["coach"].sampling.max_tokens = 8
    settings.feedback.arena_rate = 0.0
    service = ChatService(sqlite_engine, settings, local_router, rng=random.Random(0))
    reply = (await final(service, dm("How should I pace my first marathon?")))[0]
    gen = crud.get_generation(sqlite_engine, generation_id=reply.generation_ids[0])
    assert gen.adapter_version == "coach-v1" and gen.backend == "local"
    assert gen.status in ("ok", "cut_off") and gen.completion_tokens is not None and gen.completion_tokens <= 8
    stored = crud.get_message(sqlite_engine, message_id=gen.message_id).text
    assert reply.text == (stored if stored.strip() else "(no answer this time: press 🔄 for another try)") + \
        (" …" if gen.status == "cut_off" else "")
    assert [b.label for b in reply.buttons[0]] == ["👍", "👎", "🔄"]

    settings.feedback.arena_rate = 1.0
    arena = ChatService(sqlite_engine, settings, local_router, rng=random.Random(1))
    round_ = (await final(arena, dm("What should I eat before a race?")))[0]
    versions = {crud.get_generation(sqlite_engine, generation_id=g).adapter_version for g in round_.generation_ids}
    assert versions == {"coach-v1", None} and round_.comparison_id
    out = await arena.press(press(f"p:{round_.comparison_id}:a"))
    assert out.answer == "Thanks! A is kept."
