"""Fresh arena pairs: when a visitor has judged every stored pair, the running router answers a curated prompt
with the live version and with the base model, and both replies are stored like chat replies."""

from __future__ import annotations

import asyncio
import random
import time

from loopbot.serving.base import SamplingParams
from loopbot.storage import crud
from loopbot.storage.db import transaction
from loopbot.trainer.registry import running_router
from loopbot.web.arena import ARENA_PLATFORM


def arena_prompts(loopbot, persona: str) -> list[str]:
    settings = loopbot.settings
    return [p for p in (*settings.web.arena_prompts, *settings.personas[persona].smoke_prompts) if p.strip()]


async def generate_pair(loopbot, persona: str, *, rng: random.Random | None = None) -> bool:
    """Answer one curated prompt with the live version and the base model; False when there is nothing to do
    (no router in this process, the persona serves the base model, no prompts, or a reply failed)."""
    router = running_router(loopbot)
    prompts = arena_prompts(loopbot, persona)
    if router is None or not prompts:
        return False
    await router.start()
    live = router.route(persona)
    if live is None:
        return False
    prompt = (rng or random.Random()).choice(prompts)
    p = loopbot.settings.personas[persona]
    sampling = SamplingParams(temperature=p.sampling.temperature, top_p=p.sampling.top_p,
                              max_tokens=p.sampling.max_tokens, repetition_penalty=p.sampling.repetition_penalty)
    messages = [{"role": "system", "content": p.system_prompt}, {"role": "user", "content": prompt}]
    answers = []
    for name in (live, None):
        started = time.monotonic()
        try:
            text, finished = await router.complete(persona, messages, sampling=sampling, adapter=name)
        except Exception:
            return False
        if not text.strip():
            return False
        answers.append((name, text, finished, (time.monotonic() - started) * 1000))
    await asyncio.to_thread(_store, loopbot, persona, prompt, messages, sampling.as_dict(), answers,
                            getattr(router.backend, "name", ""))
    return True


def _store(loopbot, persona, prompt, messages, sampling, answers, backend) -> None:
    """The prompt and both replies in one transaction: a pair is stored whole or not at all."""
    with transaction(loopbot.engine) as session:
        user = crud.get_or_create_user(session, platform=ARENA_PLATFORM, platform_user_id="arena",
                                       display_name="web arena")
        chat = crud.get_or_create_chat(session, platform=ARENA_PLATFORM, platform_chat_id=f"arena-{persona}",
                                       persona=persona)
        asked = crud.record_message(session, chat_id=chat.id, user_id=user.id, role="user", text=prompt,
                                    persona=persona, conversation_id=chat.conversation_id)
        for name, text, finished, latency_ms in answers:
            gen = crud.start_generation(session, chat_id=chat.id, persona=persona, prompt=messages,
                                        prompt_message_id=asked.id, conversation_id=chat.conversation_id,
                                        adapter_version=name, backend=backend, sampling=sampling, in_history=False)
            crud.finish_generation(session, generation_id=gen.id, text=text,
                                   status="cut_off" if finished and finished.finish_reason == "length" else "ok",
                                   finish_reason=finished.finish_reason if finished else None,
                                   latency_ms=latency_ms, prompt_tokens=finished.prompt_tokens if finished else None,
                                   completion_tokens=finished.completion_tokens if finished else None)
