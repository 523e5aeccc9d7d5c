"""Users, chats, consent and /forget."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import delete, func, or_, select, update

from loopbot.storage.crud.chat_people import find_or_add_chat, find_or_add_user
from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Chat, Comparison, Event, Feedback, Generation, Message, User

__all__ = [
    "dataset_build_paths",
    "forget_user",
    "forgotten_texts",
    "get_chat",
    "get_or_create_chat",
    "get_or_create_user",
    "get_user",
    "last_event_id",
    "new_conversation",
    "record_event",
    "set_admin",
    "set_arena_consent",
    "set_chat_persona",
    "set_consent",
]


def get_or_create_user(db: DB, *, platform: str, platform_user_id: str, display_name: str = "",
                       default_consent: bool = True) -> User:
    with transaction(db) as s:
        return find_or_add_user(s.connection(), platform, str(platform_user_id), display_name, default_consent)


def get_user(db: DB, *, user_id: int) -> User | None:
    with transaction(db) as s:
        return s.get(User, user_id)


def get_or_create_chat(db: DB, *, platform: str, platform_chat_id: str, type: str = "private",
                       persona: str | None = None, bot: str = "") -> Chat:
    with transaction(db) as s:
        return find_or_add_chat(s.connection(), platform, bot, str(platform_chat_id), type, persona)


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


def set_arena_consent(db: DB, *, user_id: int, consent: bool) -> None:
    """/arena on|off: whether the user's chat messages (and the replies to them) may be shown in the public arena."""
    with transaction(db) as s:
        s.execute(update(User).where(User.id == user_id).values(arena_consent=consent))
        s.add(Event(kind="arena_consent", data={"user_id": user_id, "consent": consent}))


def set_admin(db: DB, *, user_id: int, is_admin: bool) -> None:
    with transaction(db) as s:
        s.execute(update(User).where(User.id == user_id).values(is_admin=is_admin))


def forgotten_texts(db: DB, *, user_id: int) -> list[str]:
    """What /forget of this user removes: the texts of their messages and of the replies to them (the dataset
    files and reports built from them are found by these texts before the rows go)."""
    with transaction(db) as s:
        msg_ids = select(Message.id).where(Message.user_id == user_id)
        reply_ids = select(Generation.message_id).where(Generation.prompt_message_id.in_(msg_ids))
        texts = s.execute(select(Message.text).where(or_(Message.id.in_(msg_ids), Message.id.in_(reply_ids))))
        return sorted({t for t in texts.scalars() if t and t.strip()})


def forget_user(db: DB, *, user_id: int, files: dict | None = None) -> dict[str, int]:
    """Delete a user's messages, the generations that answered them, and every vote and pick on or by them; take
    those texts out of the stored prompts of the other replies that carried them (a reply chain, a merged turn);
    blank the user's display name. The user row stays, with its consent, so a later message is not taken as
    consent by default. `files`: what was deleted on disk before (dataset builds, reports), kept in the event."""
    with transaction(db) as s:
        msg_ids = select(Message.id).where(Message.user_id == user_id)
        chat_ids = set(s.execute(select(Message.chat_id).where(Message.user_id == user_id).distinct()).scalars())
        gen_ids = list(s.execute(select(Generation.id).where(Generation.prompt_message_id.in_(msg_ids))).scalars())
        reply_msg_ids = list(s.execute(select(Generation.message_id).where(Generation.id.in_(gen_ids))).scalars())
        all_msg_ids = list(s.execute(msg_ids).scalars()) + reply_msg_ids
        texts = {t for t in s.execute(select(Message.text).where(Message.id.in_(all_msg_ids))).scalars()
                 if t and t.strip()}
        votes = s.execute(delete(Feedback).where(or_(Feedback.user_id == user_id,
                                                     Feedback.generation_id.in_(gen_ids)))).rowcount
        picks = s.execute(delete(Comparison).where(or_(Comparison.user_id == user_id,
                                                       Comparison.generation_a_id.in_(gen_ids),
                                                       Comparison.generation_b_id.in_(gen_ids)))).rowcount
        # break retry links from surviving generations, then delete
        s.execute(update(Generation).where(Generation.retry_of_id.in_(gen_ids)).values(retry_of_id=None))
        gens = s.execute(delete(Generation).where(Generation.id.in_(gen_ids))).rowcount
        s.execute(update(Message).where(Message.reply_to_id.in_(all_msg_ids)).values(reply_to_id=None))
        msgs = s.execute(delete(Message).where(Message.id.in_(all_msg_ids))).rowcount
        prompts = 0
        if texts and chat_ids:  # a reply chain or a history never leaves its chat
            for gen_id, prompt in s.execute(select(Generation.id, Generation.prompt)
                                            .where(Generation.chat_id.in_(chat_ids))).all():
                kept = without_texts(prompt, texts)
                if kept is not None:
                    s.execute(update(Generation).where(Generation.id == gen_id).values(prompt=kept))
                    prompts += 1
        s.execute(update(User).where(User.id == user_id).values(display_name=""))
        counts = {"messages": msgs, "generations": gens, "votes": votes, "comparisons": picks, "prompts": prompts}
        s.add(Event(kind="forget", data={"user_id": user_id, **counts, **(files or {})}))
        return counts


def without_texts(prompt: list, texts: set[str]) -> list | None:
    """`prompt` (chat messages) without the turns that are one of `texts`, nor those texts where they were merged
    into a turn (two user messages in a row are joined by a blank line); None when nothing changes."""
    out: list[dict] = []
    changed = False
    for m in prompt:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str) and m.get("role") != "system":
            for t in sorted((t for t in texts if t in content), key=len, reverse=True):
                content = re.sub(r"(?:\A|(?<=\n\n))" + re.escape(t) + r"(?:\n\n|\Z)", "", content)
            if content != m["content"]:
                changed = True
                content = content.removesuffix("\n\n")
                if not content.strip():
                    continue
                m = {**m, "content": content}
        if out and isinstance(m, dict) and out[-1].get("role") == m.get("role") != "system":
            out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n\n{m['content']}"}  # turns met by a removal
        else:
            out.append(m)
    return out if changed else None


def dataset_build_paths(db: DB) -> list[str]:
    """The directories dataset builds were written to, and the artifact store URIs they were published to (a
    remote copy must go on /forget too), as their events recorded them."""
    with transaction(db) as s:
        data = s.execute(select(Event.data).where(Event.kind.in_(("dataset_build", "dataset_published")))).scalars()
        return sorted({d.get("path") or d.get("uri") for d in data
                       if isinstance(d, dict) and (d.get("path") or d.get("uri"))})


def last_event_id(db: DB, *, kind: str) -> int:
    """The id of the newest event of this kind (0 = none): a dataset build compares it before and after, to know
    whether a /forget ran meanwhile."""
    with transaction(db) as s:
        return s.execute(select(func.max(Event.id)).where(Event.kind == kind)).scalar() or 0


def record_event(db: DB, *, kind: str, persona: str | None = None, data: dict | None = None) -> None:
    with transaction(db) as s:
        s.add(Event(kind=kind, persona=persona, data=data or {}))
