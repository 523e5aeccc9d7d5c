"""The values that cross between the chat core and a platform adapter (no platform types here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Incoming:
    """A message a user sent, as the platform adapter saw it."""

    platform: str
    chat_id: str
    user_id: str
    text: str | None  # None: not a text message (sticker, photo, voice ...)
    chat_type: str = "private"  # private | group
    user_name: str = ""
    message_id: str | None = None
    reply_to_message_id: str | None = None
    addressed: bool = True  # a DM, a mention, or a reply to the bot
    kind: str = "text"  # what it was when not text: sticker, photo, voice ...
    bot: str = ""  # which of the platform's bots it came to ([[telegram.bots]] name; "" = the one-bot form)


@dataclass(frozen=True)
class Press:
    """A button press (callback) on one of the bot's messages."""

    platform: str
    chat_id: str
    user_id: str
    data: str
    user_name: str = ""
    chat_type: str = "private"
    message_id: str | None = None
    bot: str = ""


@dataclass(frozen=True)
class Reaction:
    """A user's reactions on a message changed: `emoji` is what is there now."""

    platform: str
    chat_id: str
    user_id: str
    message_id: str
    emoji: tuple[str, ...]
    user_name: str = ""
    bot: str = ""


@dataclass(frozen=True)
class Button:
    label: str
    data: str


@dataclass
class Reply:
    """One state of one outgoing message. A stream carries several states per `key`; the last has final=True."""

    key: int
    text: str
    final: bool = False
    buttons: list[list[Button]] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)  # stored assistant messages this platform message shows
    generation_ids: list[int] = field(default_factory=list)
    comparison_id: int | None = None
    plain: bool = False  # no formatting (command answers, errors)


@dataclass
class PressOutcome:
    """What to do after a press: the toast answer, new buttons for the pressed message, and/or new replies."""

    answer: str
    buttons: list[list[Button]] | None = None
    edit_text: str | None = None
    replies: object | None = None  # AsyncIterator[Reply] (e.g. a retry)
