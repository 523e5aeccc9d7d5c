"""The chat core's front door, one per process and shared by every platform: incoming messages, button presses
and reactions, each handed to its handler.

Import structure, without circles: chat.py imports commands.py (slash commands) and feedback.py (buttons,
reactions); all three import core.py (users, chats, personas, limits, generating and storing replies), which
imports none of them. The handlers receive the ChatCore and never import this module. ChatService is that core
plus the dispatch below, so a platform adapter needs only this class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from loopbot.bot.access import PRIVATE
from loopbot.bot.commands import run_command
from loopbot.bot.core import ChatCore, NewPrompt
from loopbot.bot.feedback import handle_press, handle_reaction
from loopbot.bot.history import build_prompt
from loopbot.bot.messages import Incoming, Press, PressOutcome, Reaction, Reply
from loopbot.bot.text import clean_text
from loopbot.storage import crud

NON_TEXT_ANSWER = ("I can only read text for now, so I can't see that {kind}. "
                   "Send me your message as text and I'll answer.")


class ChatService(ChatCore):
    """The chat core with its handlers: `handle` a message, `press` a button, count a `reaction`."""

    async def handle(self, inc: Incoming) -> AsyncIterator[Reply]:
        """Answer one incoming message: nothing (not addressed to the bot), a refusal, a command's answer,
        or a streamed reply. The user's message is stored before the model is called."""
        if not inc.addressed:
            return
        if not self.access.allows(inc.platform, inc.user_id, inc.chat_id):
            yield Reply(0, PRIVATE, final=True, plain=True)
            return
        if inc.text is None:
            yield Reply(0, NON_TEXT_ANSWER.format(kind=inc.kind or "message"), final=True, plain=True)
            return
        text = clean_text(inc.text)
        replies = run_command(self, inc, text) if text.startswith("/") else self.chat(inc, text)
        async with aclosing(replies):
            async for reply in replies:
                yield reply

    async def chat(self, inc: Incoming, text: str) -> AsyncIterator[Reply]:
        """A streamed answer to an ordinary message, or why there is none (empty, too long, too fast)."""
        user, chat = await self.user_and_chat(inc)
        persona = self.persona_of(chat)
        limit = self.settings.access.max_message_chars
        if not text.strip():
            yield Reply(0, "That message is empty. Send me some text and I'll answer.", final=True, plain=True)
            return
        replied = await self._replied_message(chat.id, inc.reply_to_message_id)
        key = f"{inc.platform}:{inc.user_id}"
        refusal = (f"That message is too long for me ({len(text):,} characters; the limit is {limit:,}). "
                   "Please send a shorter one.") if len(text) > limit else await self.limiter.refusal(key)
        if refusal:
            # kept (nothing a user sends is lost) but outside the conversation, so it never enters a prompt
            await self.db.run(crud.record_message, chat_id=chat.id, user_id=user.id, role="user", text=text,
                              persona=persona, conversation_id=f"refused:{chat.conversation_id}"[:64],
                              platform_message_id=inc.message_id)
            if await self.limiter.should_tell(key, refusal):
                yield Reply(0, refusal, final=True, plain=True)
            return
        try:
            p = self.settings.personas[persona]
            turns = [*await self._history(chat, replied, group=inc.chat_type != "private"), ("user", text)]
            messages = build_prompt(p.system_prompt, turns, p.context_tokens)
            asked = NewPrompt(user_id=user.id, text=text, platform_message_id=inc.message_id,
                              reply_to_id=replied.id if replied else None)
            async with aclosing(self.generate(chat, persona, messages, new_prompt=asked,
                                              conversation_id=chat.conversation_id)) as replies:
                async for reply in replies:
                    yield reply
        finally:
            await self.limiter.done(key)

    async def _replied_message(self, chat_id: int, platform_message_id: str | None):
        if not platform_message_id:
            return None
        await self.db.settle()  # the platform ids of replies just delivered
        return await self.db.run(crud.find_message_by_platform_id, chat_id=chat_id,
                                 platform_message_id=platform_message_id)

    async def _history(self, chat, replied, *, group: bool) -> list[tuple[str, str]]:
        """Earlier turns: the reply chain the user answered; else this conversation (a DM) or nothing (a group)."""
        if replied is not None:
            rows = await self.db.run(crud.reply_chain, message_id=replied.id)
        elif group:
            rows = []
        else:
            turns = await self.db.run(crud.recent_turns, chat_id=chat.id, conversation_id=chat.conversation_id)
            return [(role, text) for role, text in turns if text]
        return [(m.role, m.text) for m in rows if m.text]

    async def press(self, press: Press) -> PressOutcome:
        """A button press. Accepted only from an allowed user in an allowed chat, for a row of the chat it was
        pressed in, by someone in that chat."""
        return await handle_press(self, press)

    async def reaction(self, reaction: Reaction) -> int | None:
        """👍/👎 reactions on a reply count as votes (removing the reaction withdraws it); ignored from users or
        chats outside the allow-lists.
        Returns the vote now recorded (None = none), or None if the message is not one of our replies."""
        return await handle_reaction(self, reaction)
