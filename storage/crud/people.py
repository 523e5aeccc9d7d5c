"""Users, chats, consent and /forget."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, or_, select, update

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Chat, Comparison, Event, Feedback, Generation, Message, User

__all__ = [
    "forget_user",
    "get_chat",
    "get_or_create_chat",
    "get_or_create_user",
    "get_user",
    "new_conversation",
    "record_event",
    "set_admin",
    "set_chat_persona",
    "set_consent",
]


def get_or_create_user(db: DB, *, platform: str, platform_user_id: str, display_name: str = "",
                       default_consent: bool = True) -> User:
    with transaction(db) as s:
        user = s.execute(select(User).where(User.platform == platform,
                                         User.platform_user_id == str(platform_user_id))).scalar_one_or_none()
        if user is None:
            user = User(platform=platform, platform_user_id=str(platform_user_id),
                        display_name=display_name[:256], consent=default_consent)
            s.add(user)
            s.flush()
        elif display_name and user.display_name != display_name[:256]:
            user.display_name = display_name[:256]
            s.flush()
        s.refresh(user)
        return user


def get_user(db: DB, *, user_id: int) -> User | None:
    with transaction(db) as s:
        return s.get(User, user_id)


def get_or_create_chat(db: DB, *, platform: str, platform_chat_id: str, type: str = "private",
                       persona: str | None = None) -> Chat:
    with transaction(db) as s:
        chat = s.execute(select(Chat).where(Chat.platform == platform,
                                         Chat.platform_chat_id == str(platform_chat_id))).scalar_one_or_none()
        if chat is None:
            chat = Chat(platform=platform, platform_chat_id=str(platform_chat_id), type=type, persona=persona,
                        conversation_id=uuid.uuid4().hex)
            s.add(chat)
            s.flush()
        s.refresh(chat)
        return chat


def get_chat(db: DB, *, chat_id: int) -> Chat | None:
    with transaction(db) as s:
        return s.get(Chat, chat_id)


def set_chat_persona(db: DB, *, chat_id: int, persona: str) -> None:
    """Switch persona; a new persona starts a new conversation."""
    with transaction(db) as s:
        s.execute(update(Chat).where(Chat.id == chat_id).values(persona=persona, conversation_id=uuid.uuid4().hex))


def new_conversation(db: DB, *, chat_id: int) -> str:
    conversation_id = uuid.uuid4().hex
    with transaction(db) as s:
        s.execute(update(Chat).where(Chat.id == chat_id).values(conversation_id=conversation_id))
    return conversation_id


def set_consent(db: DB, *, user_id: int, consent: bool) -> None:
    with transaction(db) as s:
        s.execute(update(User).where(User.id == user_id).values(consent=consent))
        s.add(Event(kind="consent", data={"user_id": user_id, "consent": consent}))


def set_admin(db: DB, *, user_id: int, is_admin: bool) -> None:
    with transaction(db) as s:
        s.execute(update(User).where(User.id == user_id).values(is_admin=is_admin))


def forget_user(db: DB, *, user_id: int) -> dict[str, int]:
    """Delete a user's messages, the generations that answered them, and every vote and pick on or by them."""
    with transaction(db) as s:
        msg_ids = select(Message.id).where(Message.user_id == user_id)
        gen_ids = list(s.execute(select(Generation.id).where(Generation.prompt_message_id.in_(msg_ids))).scalars())
        reply_msg_ids = list(s.execute(select(Generation.message_id).where(Generation.id.in_(gen_ids))).scalars())
        votes = s.execute(delete(Feedback).where(or_(Feedback.user_id == user_id,
                                                     Feedback.generation_id.in_(gen_ids)))).rowcount
        picks = s.execute(delete(Comparison).where(or_(Comparison.user_id == user_id,
                                                       Comparison.generation_a_id.in_(gen_ids),
                                                       Comparison.generation_b_id.in_(gen_ids)))).rowcount
        # break retry links from surviving generations, then delete
        s.execute(update(Generation).where(Generation.retry_of_id.in_(gen_ids)).values(retry_of_id=None))
        gens = s.execute(delete(Generation).where(Generation.id.in_(gen_ids))).rowcount
        all_msg_ids = list(s.execute(msg_ids).scalars()) + reply_msg_ids
        s.execute(update(Message).where(Message.reply_to_id.in_(all_msg_ids)).values(reply_to_id=None))
        msgs = s.execute(delete(Message).where(Message.id.in_(all_msg_ids))).rowcount
        counts = {"messages": msgs, "generations": gens, "votes": votes, "comparisons": picks}
        s.add(Event(kind="forget", data={"user_id": user_id, **counts}))
        return counts


def record_event(db: DB, *, kind: str, persona: str | None = None, data: dict | None = None) -> None:
    with transaction(db) as s:
        s.add(Event(kind=kind, persona=persona, data=data or {}))
