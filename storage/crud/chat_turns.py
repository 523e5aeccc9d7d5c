"""The chat core's hot path: a user's message and the pending reply in ONE transaction, and the finished reply."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.engine import Engine

from storage.db import session_scope
from storage.models import Generation, Message, utcnow

__all__ = ["finish_reply", "record_prompt_and_start_generation"]


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
        s.flush()  # every column is set client-side: no refresh needed
        return gen


def finish_reply(engine: Engine, *, generation_id: int, message_id: int, text: str, status: str,
                 finish_reason: str | None = None, error: str | None = None, latency_ms: float | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None) -> None:
    """crud.finish_generation in two UPDATEs, without loading the rows (the hot path knows both ids)."""
    with session_scope(engine) as s:
        done = s.execute(update(Generation).where(Generation.id == generation_id).values(
            status=status, finish_reason=finish_reason, error=error, latency_ms=latency_ms,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, finished_at=utcnow())).rowcount
        if not done:
            raise LookupError(f"generation {generation_id} does not exist")
        s.execute(update(Message).where(Message.id == message_id).values(text=text))
