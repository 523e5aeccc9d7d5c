"""The chat core's hot path: a user's message and the pending reply in ONE transaction, the finished reply, and
the conversation's recent turns. SQLAlchemy Core on a plain connection with statements built once: the ORM
unit of work cost about three times as much per message (bench/bench_telegram.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Integer, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Engine

from loopbot.storage.models import Generation, Message, utcnow

__all__ = ["PendingReply", "finish_reply", "recent_turns", "record_prompt_and_start_generation"]

_MESSAGES, _GENERATIONS = Message.__table__, Generation.__table__
_INSERT_MESSAGE = insert(_MESSAGES)
_INSERT_GENERATION = insert(_GENERATIONS)
_FINISH_GENERATION = update(_GENERATIONS).where(_GENERATIONS.c.id == bindparam("generation_id"))
_SET_TEXT = update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message_id")).values(text=bindparam("new_text"))
_RECENT_TURNS = (
    select(_MESSAGES.c.role, _MESSAGES.c.text)
    .outerjoin(_GENERATIONS, _GENERATIONS.c.message_id == _MESSAGES.c.id)
    .where(_MESSAGES.c.chat_id == bindparam("chat_id"), _MESSAGES.c.conversation_id == bindparam("conversation_id"),
           or_(_GENERATIONS.c.id.is_(None),  # a user's message; else a reply that is shown in the history
               and_(_GENERATIONS.c.in_history.is_(True), _GENERATIONS.c.status != "error",
                    _GENERATIONS.c.status != "pending")))
    .order_by(_MESSAGES.c.id.desc()).limit(bindparam("limit", type_=Integer))
)


@dataclass(frozen=True)
class PendingReply:
    """A generation row just written: its id, the (empty) assistant message and the user's message it answers."""

    id: int
    message_id: int
    prompt_message_id: int


def _message(chat_id: int, role: str, text: str, persona: str, conversation_id: str, now, *,
             user_id: int | None = None, platform_message_id: str | None = None,
             reply_to_id: int | None = None) -> dict:
    return {"chat_id": chat_id, "user_id": user_id, "role": role, "text": text, "persona": persona,
            "conversation_id": conversation_id, "platform_message_id": platform_message_id,
            "reply_to_id": reply_to_id, "created_at": now}


def record_prompt_and_start_generation(engine: Engine, *, chat_id: int, user_id: int | None, text: str, persona: str,
                                       conversation_id: str, prompt: list[dict], adapter_version: str | None,
                                       backend: str, sampling: dict, platform_message_id: str | None = None,
                                       reply_to_id: int | None = None) -> PendingReply:
    """Store the user's message, the empty assistant message answering it and its pending generation."""
    now = utcnow()
    with engine.begin() as conn:
        asked = conn.execute(_INSERT_MESSAGE, _message(
            chat_id, "user", text, persona, conversation_id, now, user_id=user_id,
            platform_message_id=platform_message_id, reply_to_id=reply_to_id)).inserted_primary_key[0]
        answer = conn.execute(_INSERT_MESSAGE, _message(
            chat_id, "assistant", "", persona, conversation_id, now, reply_to_id=asked)).inserted_primary_key[0]
        gen = conn.execute(_INSERT_GENERATION, {
            "message_id": answer, "prompt_message_id": asked, "chat_id": chat_id, "persona": persona,
            "adapter_version": adapter_version, "backend": backend, "sampling": sampling, "prompt": prompt,
            "status": "pending", "finish_reason": None, "error": None, "latency_ms": None, "prompt_tokens": None,
            "completion_tokens": None, "retry_of_id": None, "in_history": True, "created_at": now,
            "finished_at": None}).inserted_primary_key[0]
    return PendingReply(id=gen, message_id=answer, prompt_message_id=asked)


def finish_reply(engine: Engine, *, generation_id: int, message_id: int, text: str, status: str,
                 finish_reason: str | None = None, error: str | None = None, latency_ms: float | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None) -> None:
    """crud.finish_generation in two UPDATEs, without loading the rows (the hot path knows both ids)."""
    with engine.begin() as conn:
        done = conn.execute(_FINISH_GENERATION, {
            "generation_id": generation_id, "status": status, "finish_reason": finish_reason, "error": error,
            "latency_ms": latency_ms, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "finished_at": utcnow()}).rowcount
        if not done:
            raise LookupError(f"generation {generation_id} does not exist")
        conn.execute(_SET_TEXT, {"message_id": message_id, "new_text": text})


def recent_turns(engine: Engine, *, chat_id: int, conversation_id: str, limit: int = 50) -> list[tuple[str, str]]:
    """(role, text) of crud.recent_messages, oldest first: the same rows, without loading Message objects."""
    with engine.connect() as conn:
        rows = conn.execute(_RECENT_TURNS, {"chat_id": chat_id, "conversation_id": conversation_id,
                                            "limit": limit}).all()
    return [(role, text) for role, text in reversed(rows)]
