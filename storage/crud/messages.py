"""Messages and generations: stored before and after every model call."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Generation, Message, utcnow

__all__ = [
    "find_message_by_platform_id",
    "finish_generation",
    "get_generation",
    "get_message",
    "recent_messages",
    "record_message",
    "set_in_history",
    "set_platform_message_id",
    "set_platform_message_ids",
    "start_generation",
]


def record_message(db: DB, *, chat_id: int, role: str, text: str, user_id: int | None = None,
                   persona: str | None = None, conversation_id: str = "", platform_message_id: str | None = None,
                   reply_to_id: int | None = None) -> Message:
    with transaction(db) as s:
        msg = Message(chat_id=chat_id, user_id=user_id, role=role, text=text, persona=persona,
                      conversation_id=conversation_id, platform_message_id=platform_message_id,
                      reply_to_id=reply_to_id)
        s.add(msg)
        s.flush()
        s.refresh(msg)
        return msg


def start_generation(db: DB, *, chat_id: int, persona: str, prompt: list[dict], prompt_message_id: int | None,
                     conversation_id: str, adapter_version: str | None, backend: str, sampling: dict,
                     retry_of_id: int | None = None, reply_to_id: int | None = None,
                     in_history: bool = True) -> Generation:
    """Create the (empty) assistant message and its pending generation row, in one transaction."""
    with transaction(db) as s:
        msg = Message(chat_id=chat_id, role="assistant", text="", persona=persona, conversation_id=conversation_id,
                      reply_to_id=reply_to_id if reply_to_id is not None else prompt_message_id)
        s.add(msg)
        s.flush()
        gen = Generation(message_id=msg.id, prompt_message_id=prompt_message_id, chat_id=chat_id, persona=persona,
                         adapter_version=adapter_version, backend=backend, sampling=sampling, prompt=prompt,
                         retry_of_id=retry_of_id, in_history=in_history)
        s.add(gen)
        s.flush()
        s.refresh(gen)
        return gen


def finish_generation(db: DB, *, generation_id: int, text: str, status: str, finish_reason: str | None = None,
                      error: str | None = None, latency_ms: float | None = None, prompt_tokens: int | None = None,
                      completion_tokens: int | None = None) -> Generation:
    with transaction(db) as s:
        gen = s.get(Generation, generation_id)
        if gen is None:
            raise LookupError(f"generation {generation_id} does not exist")
        gen.status, gen.finish_reason, gen.error = status, finish_reason, error
        gen.latency_ms, gen.prompt_tokens, gen.completion_tokens = latency_ms, prompt_tokens, completion_tokens
        gen.finished_at = utcnow()
        s.execute(update(Message).where(Message.id == gen.message_id).values(text=text))
        s.flush()
        s.refresh(gen)
        return gen


def get_generation(db: DB, *, generation_id: int) -> Generation | None:
    with transaction(db) as s:
        return s.get(Generation, generation_id)


def get_message(db: DB, *, message_id: int) -> Message | None:
    with transaction(db) as s:
        return s.get(Message, message_id)


_SET_PLATFORM_ID = (update(Message.__table__).where(Message.__table__.c.id == bindparam("message_id"))
                    .values(platform_message_id=bindparam("new_platform_id")))


def set_platform_message_id(engine: Engine, *, message_id: int, platform_message_id: str) -> None:
    """Once per delivered reply: Core on a plain connection (no ORM session), a statement built once."""
    with engine.begin() as conn:
        conn.execute(_SET_PLATFORM_ID, {"message_id": message_id, "new_platform_id": str(platform_message_id)})


def set_platform_message_ids(engine: Engine, *, message_ids: list[int], platform_message_id: str) -> None:
    """The messages one platform message shows (an arena round's two replies): one transaction."""
    with engine.begin() as conn:
        conn.execute(_SET_PLATFORM_ID, [{"message_id": m, "new_platform_id": str(platform_message_id)}
                                        for m in message_ids])


def find_message_by_platform_id(db: DB, *, chat_id: int, platform_message_id: str) -> Message | None:
    with transaction(db) as s:
        return s.execute(select(Message).where(Message.chat_id == chat_id,
                                               Message.platform_message_id == str(platform_message_id))
                         .order_by(Message.id.desc())).scalars().first()


def set_in_history(db: DB, *, generation_id: int, in_history: bool) -> None:
    with transaction(db) as s:
        s.execute(update(Generation).where(Generation.id == generation_id).values(in_history=in_history))


def recent_messages(db: DB, *, chat_id: int, conversation_id: str, limit: int = 50) -> list[Message]:
    """This conversation's latest messages, oldest first, without failed replies or unpicked arena candidates."""
    with transaction(db) as s:
        hidden = select(Generation.message_id).where(
            (Generation.in_history.is_(False)) | (Generation.status.in_(["error", "pending"])))
        rows = s.execute(select(Message).where(Message.chat_id == chat_id, Message.conversation_id == conversation_id,
                                               Message.id.not_in(hidden))
                         .order_by(Message.id.desc()).limit(limit)).scalars().all()
        return list(reversed(rows))
