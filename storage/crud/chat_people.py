"""The user and the chat a message comes from, created on first contact: both in ONE transaction, SQLAlchemy Core
with statements built once (the ORM's get-or-create took 2.5 ms a new user, most of a Discord reply's cost)."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from loopbot.storage.models import Chat, User, utcnow

__all__ = ["find_or_add_chat", "find_or_add_user", "user_and_chat"]

_USERS, _CHATS = User.__table__, Chat.__table__
_FIND_USER = select(_USERS).where(_USERS.c.platform == bindparam("p"), _USERS.c.platform_user_id == bindparam("pid"))
_FIND_CHAT = select(_CHATS).where(_CHATS.c.platform == bindparam("p"), _CHATS.c.bot == bindparam("bot"),
                                  _CHATS.c.platform_chat_id == bindparam("pid"))
_RENAME = update(_USERS).where(_USERS.c.id == bindparam("uid")).values(display_name=bindparam("name"))


def user_and_chat(engine: Engine, *, platform: str, platform_user_id: str | None, platform_chat_id: str | None,
                  display_name: str = "", default_consent: bool = True,
                  chat_type: str = "private", bot: str = "") -> tuple[User | None, Chat | None]:
    """crud.get_or_create_user and crud.get_or_create_chat in one transaction (None for an id not given): detached
    rows to read. A concurrent first contact by the same user or chat is taken, not duplicated. The user is one
    per platform; the chat is one per (platform, `bot`, platform chat id)."""
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                user = find_or_add_user(conn, platform, platform_user_id, display_name, default_consent) \
                    if platform_user_id is not None else None
                chat = find_or_add_chat(conn, platform, bot, platform_chat_id, chat_type) \
                    if platform_chat_id is not None else None
                return user, chat
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def find_or_add_user(conn: Connection, platform: str, platform_user_id: str, display_name: str,
                     consent: bool) -> User:
    """The user row (renamed when `display_name` changed), inserted on first contact, on `conn`'s transaction."""
    name = display_name[:256]
    row = conn.execute(_FIND_USER, {"p": platform, "pid": str(platform_user_id)}).mappings().first()
    if row is None:
        values = {"platform": platform, "platform_user_id": str(platform_user_id), "display_name": name,
                  "consent": consent, "arena_consent": False, "is_admin": False, "created_at": utcnow()}
        new_id = conn.execute(insert(_USERS), values).inserted_primary_key[0]
        return User(id=new_id, **values)
    if name and row["display_name"] != name:
        conn.execute(_RENAME, {"uid": row["id"], "name": name})
        return User(**{**row, "display_name": name})
    return User(**row)


def find_or_add_chat(conn: Connection, platform: str, bot: str, platform_chat_id: str, chat_type: str,
                     persona: str | None = None) -> Chat:
    """The chat row of (platform, bot, platform chat id), inserted on first contact (with `persona`)."""
    row = conn.execute(_FIND_CHAT, {"p": platform, "bot": bot, "pid": str(platform_chat_id)}).mappings().first()
    if row is not None:
        return Chat(**row)
    values = {"platform": platform, "bot": bot, "platform_chat_id": str(platform_chat_id), "type": chat_type,
              "persona": persona, "conversation_id": uuid.uuid4().hex, "created_at": utcnow()}
    new_id = conn.execute(insert(_CHATS), values).inserted_primary_key[0]
    return Chat(id=new_id, **values)
