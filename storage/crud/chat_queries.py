"""Reads the chat core needs: a reply by its message, the last reply in a chat, reply chains, reply counts."""

from __future__ import annotations

from sqlalchemy import func, select

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Feedback, Generation, Message

__all__ = ["count_replies", "generation_for_message", "last_generation", "reply_chain", "user_in_chat", "vote_tally"]


def generation_for_message(db: DB, *, message_id: int) -> Generation | None:
    with transaction(db) as s:
        return s.execute(select(Generation).where(Generation.message_id == message_id)).scalar_one_or_none()


def last_generation(db: DB, *, chat_id: int, conversation_id: str) -> Generation | None:
    """The newest finished reply of this conversation that is part of its history (what /retry retries)."""
    with transaction(db) as s:
        return s.execute(select(Generation).join(Message, Message.id == Generation.message_id)
                         .where(Generation.chat_id == chat_id, Message.conversation_id == conversation_id,
                                Generation.in_history.is_(True), Generation.prompt_message_id.is_not(None),
                                Generation.status.in_(["ok", "cut_off"]))
                         .order_by(Generation.id.desc())).scalars().first()


def reply_chain(db: DB, *, message_id: int, limit: int = 50) -> list[Message]:
    """The message and the ones it replies to, oldest first; failed replies and unpicked candidates left out.
    A reply that a retry replaced in the conversation stays: someone answered it, so it is this chain's turn."""
    chain: list[Message] = []
    with transaction(db) as s:
        current: int | None = message_id
        while current is not None and len(chain) < limit:
            msg = s.get(Message, current)
            if msg is None:
                break
            gen = s.execute(select(Generation).where(Generation.message_id == msg.id)).scalar_one_or_none()
            if gen is None or (gen.status in ("ok", "cut_off") and (gen.in_history or s.execute(
                    select(Generation.id).where(Generation.retry_of_id == gen.id).limit(1)).first() is not None)):
                chain.append(msg)
            current = msg.reply_to_id
    chain.reverse()
    return chain


def count_replies(db: DB, *, persona: str, chat_id: int | None = None) -> int:
    with transaction(db) as s:
        q = select(func.count()).select_from(Generation).where(Generation.persona == persona,
                                                               Generation.status.in_(["ok", "cut_off"]))
        if chat_id is not None:
            q = q.where(Generation.chat_id == chat_id)
        return s.execute(q).scalar() or 0


def user_in_chat(db: DB, *, user_id: int, chat_id: int) -> bool:
    """Has this user written in this chat (so a button press from them there is genuine)."""
    with transaction(db) as s:
        return s.execute(select(Message.id).where(Message.user_id == user_id, Message.chat_id == chat_id)
                         .limit(1)).first() is not None


def vote_tally(db: DB, *, generation_id: int) -> tuple[int, int]:
    """(👍, 👎) on one reply."""
    with transaction(db) as s:
        counts = dict(s.execute(select(Feedback.value, func.count()).where(Feedback.generation_id == generation_id)
                                .group_by(Feedback.value)).all())
        return counts.get(1, 0), counts.get(-1, 0)
