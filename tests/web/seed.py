"""Rows the web tests start from: replies of several versions to the same prompts, adapters, votes."""

from __future__ import annotations

import json

from loopbot.storage import crud


def reply(engine, *, persona: str, prompt: str, text: str, version: str | None, user: str = "u1",
          latency_ms: float = 800.0) -> int:
    """A user message and one finished reply to it by `version` (None = base); returns the generation id."""
    u = crud.get_or_create_user(engine, platform="telegram", platform_user_id=user, display_name=user)
    crud.set_arena_consent(engine, user_id=u.id, consent=True)  # chat users who agreed to the arena (/arena on)
    chat = crud.get_or_create_chat(engine, platform="telegram", platform_chat_id=f"chat-{user}", persona=persona)
    msg = crud.record_message(engine, chat_id=chat.id, user_id=u.id, role="user", text=prompt, persona=persona,
                              conversation_id=chat.conversation_id)
    gen = crud.start_generation(engine, chat_id=chat.id, persona=persona, prompt=[{"role": "user", "content": prompt}],
                                prompt_message_id=msg.id, conversation_id=chat.conversation_id,
                                adapter_version=version, backend="local", sampling={})
    crud.finish_generation(engine, generation_id=gen.id, text=text, status="ok", finish_reason="stop",
                           latency_ms=latency_ms, prompt_tokens=12, completion_tokens=7)
    return gen.id


def adapter_dir(loopbot, persona: str, version: int) -> str:
    """<data_dir>/adapters/<persona>/v<version>/ with an adapter_config.json (what the registry checks for)."""
    root = loopbot.settings.adapters_dir / persona / f"v{version}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    return str(root)


def arena_world(loopbot, *, persona: str = "coach", prompts: int = 3) -> dict[str, list[int]]:
    """`prompts` prompts, each answered by base, v1 and v2; v1 retired, v2 live. Returns {version: [gen ids]}."""
    engine = loopbot.engine
    crud.create_adapter(engine, persona=persona, version=1, base_model="tiny", path=adapter_dir(loopbot, persona, 1))
    crud.create_adapter(engine, persona=persona, version=2, base_model="tiny", path=adapter_dir(loopbot, persona, 2),
                        parent_version=1)
    crud.activate_adapter(engine, persona=persona, version=1)
    crud.activate_adapter(engine, persona=persona, version=2)
    gens: dict[str, list[int]] = {"base": [], f"{persona}-v1": [], f"{persona}-v2": []}
    for i in range(prompts):
        prompt = f"How should I pace long run number {i}?"
        for style, version in zip(("Run easy", "Start slow", "Keep it steady"), gens, strict=False):
            gens[version].append(reply(engine, persona=persona, prompt=prompt, user=f"u{i}",
                                       text=f"{style}, then faster (#{i}).",
                                       version=None if version == "base" else version))
    return gens


def many_replies(engine, *, persona: str, prompt: str, n: int, versions=(None, "coach-v1")) -> None:
    """One user message `prompt` and `n` finished replies to it, by `versions` in turn (bulk inserts: fast)."""
    from sqlalchemy import insert, select

    from loopbot.storage.db import session_scope
    from loopbot.storage.models import Generation, Message

    u = crud.get_or_create_user(engine, platform="telegram", platform_user_id="many", display_name="many")
    crud.set_arena_consent(engine, user_id=u.id, consent=True)  # /arena on: their messages may be shown
    chat = crud.get_or_create_chat(engine, platform="telegram", platform_chat_id="chat-many", persona=persona)
    asked = crud.record_message(engine, chat_id=chat.id, user_id=u.id, role="user", text=prompt, persona=persona,
                                conversation_id=chat.conversation_id)
    with session_scope(engine) as s:
        s.execute(insert(Message), [{"chat_id": chat.id, "role": "assistant", "text": f"reply {i} to {prompt}",
                                     "persona": persona, "conversation_id": chat.conversation_id,
                                     "reply_to_id": asked.id} for i in range(n)])
        ids = s.execute(select(Message.id).where(Message.reply_to_id == asked.id, Message.role == "assistant")
                        .order_by(Message.id)).scalars().all()
        s.execute(insert(Generation), [{"message_id": mid, "prompt_message_id": asked.id, "chat_id": chat.id,
                                        "persona": persona, "adapter_version": versions[i % len(versions)],
                                        "backend": "local", "sampling": {}, "prompt": [], "status": "ok",
                                        "in_history": True} for i, mid in enumerate(ids)])
