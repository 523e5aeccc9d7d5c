"""A user's message and the pending reply to it, written in ONE transaction (the chat core's hot path)."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from storage.db import session_scope
from storage.models import Generation, Message

__all__ = ["record_prompt_and_start_generation"]


def record_prompt_and_start_generation(engine: Engine, *, chat_id: int, user_id: int | None, text: str, persona: str,
                                       conversation_id: str, prompt: list[dict], adapter_version: str | None,
                                       backend: str, sampling: dict, platform_message_id: str | None = None,
                                       reply_to_id: int | None = None) -> Generation:
    """Store the user's message, the empty assistant message answering it and its pending generation."""
    with session_scope(engine) as s:
        asked = Message(chat_id=chat_id, user_id=user_id, role="user", text=text, persona=persona,
                        conversation_id=conversation_id, platform_message_id=platform_message_id,
                        reply_to_id=reply_to_id)
        s.add(asked)
        s.flush()
        answer = Message(chat_id=chat_id, role="assistant", text="", persona=persona, conversation_id=conversation_id,
                         reply_to_id=asked.id)
        s.add(answer)
        s.flush()
        gen = Generation(message_id=answer.id, prompt_message_id=asked.id, chat_id=chat_id, persona=persona,
                         adapter_version=adapter_version, backend=backend, sampling=sampling, prompt=prompt)
        s.add(gen)
        s.flush()
        s.refresh(gen)
        return gen
