"""`loopbot chat`: talk to a persona in the terminal through the same chat core the bots use.

On a terminal replies stream in and `+` / `-` / `r` (and `a` / `b` in an arena round) rate the last reply;
otherwise every line read from standard input is answered with one printed reply, and the command exits at EOF."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from loopbot.bot.chat import ChatService
from loopbot.bot.messages import Incoming, Press, Reply
from loopbot.storage import crud
from loopbot.training_control import LoopbotTraining

PLATFORM = "terminal"
SHORTCUTS = {"+": "v:{g}:+1", "-": "v:{g}:-1", "r": "r:{g}", "a": "p:{c}:a", "b": "p:{c}:b", "tie": "p:{c}:tie",
             "bad": "p:{c}:both_bad"}


def run_terminal_chat(loopbot, *, persona: str, user: str = "local", stdin: TextIO | None = None,
                      stdout: TextIO | None = None, interactive: bool | None = None) -> None:
    """Chat with `persona` as `user` until EOF (or /quit). Not interactive: one printed reply per input line."""
    loopbot.settings.persona(persona)  # an unknown persona is a one-line usage error
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    interactive = stdin.isatty() and stdout.isatty() if interactive is None else interactive
    asyncio.run(TerminalChat(loopbot, persona, user, stdin, stdout, interactive).run())


class TerminalChat:
    def __init__(self, loopbot, persona: str, user: str, stdin: TextIO, stdout: TextIO, interactive: bool):
        settings = loopbot.settings.model_copy(deep=True)
        settings.access.messages_per_minute = 1_000_000  # the person at the keyboard is not rate limited
        settings.access.allowed_users, settings.access.allowed_chats = [], []
        if not interactive:
            settings.feedback.arena_rate = 0.0  # a script gets exactly one answer per line
        self.loopbot = loopbot
        self.service = ChatService(loopbot.engine, settings, loopbot.router, training=LoopbotTraining(loopbot))
        self.persona, self.user = persona, user
        self.stdin, self.stdout, self.interactive = stdin, stdout, interactive
        self.last: Reply | None = None

    async def run(self) -> None:
        chat = crud.get_or_create_chat(self.loopbot.engine, platform=PLATFORM, platform_chat_id=self.user)
        if self.service.persona_of(chat) != self.persona or chat.persona is None:
            crud.set_chat_persona(self.loopbot.engine, chat_id=chat.id, persona=self.persona)
        if self.interactive:
            p = self.loopbot.settings.personas[self.persona]
            self._print(f"Talking to {p.display_name} ({self.persona}). /help for commands, Ctrl-D to leave.\n"
                        "Rate a reply with + or -, r for another answer.")
        try:
            while True:
                line = await asyncio.to_thread(self._read)
                if line is None or line.strip() in ("/quit", "/exit"):
                    break
                line = line.rstrip("\n")
                if self.interactive and await self._shortcut(line.strip()):
                    continue
                if not self.interactive and not line.strip():
                    continue
                await self._show(self.service.handle(Incoming(platform=PLATFORM, chat_id=self.user,
                                                              user_id=self.user, text=line, user_name=self.user)))
        finally:
            if "backend" in self.loopbot.__dict__:
                await self.loopbot.backend.aclose()

    def _read(self) -> str | None:
        if self.interactive:
            try:
                return input("you> ")
            except EOFError:
                return None
        line = self.stdin.readline()
        return line or None

    async def _shortcut(self, key: str) -> bool:
        """`+` `-` `r` `a` `b` `tie` `bad` press a button of the last reply."""
        if key not in SHORTCUTS or self.last is None:
            return False
        template = SHORTCUTS[key]
        gen = self.last.generation_ids[0] if self.last.generation_ids else None
        cmp = self.last.comparison_id
        if ("{g}" in template and (gen is None or cmp is not None)) or ("{c}" in template and cmp is None):
            return False
        outcome = await self.service.press(Press(platform=PLATFORM, chat_id=self.user, user_id=self.user,
                                                 data=template.format(g=gen, c=cmp)))
        self._print(f"({outcome.answer})")
        if outcome.buttons and cmp is not None:  # the pick is made: the kept reply can be rated now
            kept = int(outcome.buttons[0][0].data.split(":")[1])
            self.last = Reply(0, "", final=True, generation_ids=[kept])
        if outcome.replies is not None:
            await self._show(outcome.replies)
        return True

    async def _show(self, replies) -> None:
        shown = ""
        async for reply in replies:
            if self.interactive and not reply.final and reply.comparison_id is None and len(reply.generation_ids) == 1:
                if reply.text.startswith(shown):
                    self.stdout.write(("bot> " if not shown else "") + reply.text[len(shown):])
                    self.stdout.flush()
                    shown = reply.text
                continue
            if not reply.final:
                continue
            if shown and reply.text.startswith(shown):
                self._print(reply.text[len(shown):])
            else:
                self._print(("bot> " if self.interactive else "") + reply.text)
            shown = ""
            if reply.buttons:
                self.last = reply
                if self.interactive:
                    self._print("   [a] A  [b] B  [tie]  [bad] both bad" if reply.comparison_id
                                else "   [r] 🔄" if reply.plain else "   [+] 👍  [-] 👎  [r] 🔄")
            self._explain_error(reply)

    def _explain_error(self, reply: Reply) -> None:
        """A failed reply shows the user-facing message; the terminal also says what went wrong, on stderr."""
        if not (reply.plain and reply.generation_ids):
            return
        gen = crud.get_generation(self.loopbot.engine, generation_id=reply.generation_ids[0])
        if gen is not None and gen.status == "error" and gen.error:
            print(f"loopbot: {gen.error}", file=sys.stderr)

    def _print(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()
