"""The chat core beneath the handlers: users, chats and personas, access and rate limits, and streaming, storing
and arena rounds of replies. The message, command and button handlers (chat.py, commands.py, feedback.py) sit
above it; it imports none of them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from loopbot.base.settings import ServedBot, Settings
from loopbot.bot import buttons
from loopbot.bot.access import Access, ReplyLimits
from loopbot.bot.admin_actions import TrainingControl
from loopbot.bot.messages import Incoming, Press, Reply
from loopbot.bot.routing import backend_name, resolve
from loopbot.serving.base import Finished, SamplingParams, TextChunk
from loopbot.serving.errors import ServingError
from loopbot.storage import crud
from loopbot.storage.aio import AsyncDB

log = logging.getLogger(__name__)

CACHE_TTL_S = 30.0
PLATFORMS = ("telegram", "discord")  # the platforms with configured bots (settings.bots)


@dataclass(frozen=True)
class NewPrompt:
    """A user message to store together with the reply's pending generation."""

    user_id: int
    text: str
    platform_message_id: str | None = None
    reply_to_id: int | None = None


class ChatCore:
    """What every handler shares: the stored users and chats, personas, access and rate limits, and replies.
    `router` is a serving.router.Router: `route(persona)` and `stream(persona, messages, sampling=, adapter=)`.
    Every database call goes through `self.db` (storage/aio.py): never on the event loop."""

    def __init__(self, engine, settings: Settings, router: Any, *, training: TrainingControl | None = None,
                 rng: random.Random | None = None, clock=time.monotonic):
        self.db = AsyncDB.of(engine)
        self.engine = self.db.engine
        self.settings = settings
        self.router = router
        self.training = training  # /train and /rollback; None = this process cannot train (the commands say so)
        self.rng = rng or random.Random()
        self.access = Access(settings.access)
        self.limiter = ReplyLimits(settings.access.messages_per_minute, settings.access.concurrent_generations,
                                   clock=clock, shared=settings.shared, database_url=settings.database_url)
        self.reactions_in_order = asyncio.Lock()
        self._users: dict[tuple[str, str], tuple[float, object]] = {}
        self._chats: dict[tuple[str, str, str], tuple[float, object]] = {}

    async def user_and_chat(self, inc: Incoming | Press):
        """The stored user and chat (created on first contact, both in one transaction); cached briefly, dropped
        when we change them."""
        now = time.monotonic()
        if len(self._users) > 50_000 or len(self._chats) > 50_000:
            self._users.clear()
            self._chats.clear()
        ukey, ckey = (inc.platform, inc.user_id), (inc.platform, inc.bot, inc.chat_id)
        hit, cached = self._users.get(ukey), self._chats.get(ckey)
        name = inc.user_name[:256]
        stale_user = hit is None or now - hit[0] > CACHE_TTL_S or bool(name and hit[1].display_name != name)
        stale_chat = cached is None or now - cached[0] > CACHE_TTL_S
        if stale_user or stale_chat:
            user, chat = await self.db.run(
                crud.user_and_chat, platform=inc.platform, platform_user_id=inc.user_id if stale_user else None,
                platform_chat_id=inc.chat_id if stale_chat else None, display_name=inc.user_name,
                default_consent=self.settings.feedback.consent_default,
                chat_type="private" if inc.chat_type == "private" else "group", bot=inc.bot)
            if user is not None:
                self._users[ukey] = hit = (now, user)
            if chat is not None:
                self._chats[ckey] = cached = (now, chat)
        return hit[1], cached[1]

    def changed(self, *, user_id: int | None = None, chat_id: int | None = None) -> None:
        """Forget cached rows after a change (consent, /forget, persona, /new)."""
        if user_id is not None:
            self._users = {k: v for k, v in self._users.items() if v[1].id != user_id}
        if chat_id is not None:
            self._chats = {k: v for k, v in self._chats.items() if v[1].id != chat_id}

    def served_bot(self, chat) -> ServedBot | None:
        """The configured bot a chat is with (None: not a chat platform's, e.g. the terminal)."""
        if chat.platform not in PLATFORMS:
            return None
        return self.settings.bot(chat.platform, getattr(chat, "bot", "") or "")

    def persona_of(self, chat) -> str:
        """A fixed bot's persona; else the chat's choice (/persona), else its bot's (or platform's) default."""
        served = self.served_bot(chat)
        if served is not None and not served.switchable:
            name = served.persona
        else:
            platform_default = getattr(getattr(self.settings, chat.platform, None), "default_persona", None)
            name = chat.persona or (served.persona if served else platform_default) or self.settings.default_persona
        return name if name in self.settings.personas else self.settings.default_persona

    def is_admin(self, platform: str, platform_user_id: str, user=None) -> bool:
        return self.access.is_admin(platform, platform_user_id) or bool(user is not None and user.is_admin)

    # ---- generation --------------------------------------------------------------------------------------------

    def sampling(self, persona: str) -> SamplingParams:
        s = self.settings.personas[persona].sampling
        return SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                              repetition_penalty=s.repetition_penalty)

    async def generate(self, chat, persona: str, messages: list[dict], *, conversation_id: str,
                       prompt_message_id: int | None = None, new_prompt: NewPrompt | None = None,
                       retry_of_id: int | None = None, key: int = 0) -> AsyncIterator[Reply]:
        """Stream one reply (or, with probability arena_rate, two candidates A/B) and store it. `new_prompt` is a
        user message not stored yet: it is written with the pending reply, in one transaction, before the model runs."""
        try:
            live = await self.live_version(persona)
        except ServingError as e:
            if new_prompt is not None:
                await self._record(chat, persona, conversation_id, new_prompt)
            yield Reply(key, e.user_message, final=True, plain=True)
            return
        arena = (retry_of_id is None and live is not None and self.settings.feedback.arena_rate > 0
                 and self.rng.random() < self.settings.feedback.arena_rate)
        if arena:
            if new_prompt is not None:
                prompt_message_id = (await self._record(chat, persona, conversation_id, new_prompt)).id
            versions = [live, None]
            self.rng.shuffle(versions)
            async with aclosing(self._arena(chat, persona, messages, versions, prompt_message_id, conversation_id,
                                            key)) as replies:
                async for reply in replies:
                    yield reply
            return
        if new_prompt is not None:
            gen = await self.db.run(
                crud.record_prompt_and_start_generation, chat_id=chat.id, user_id=new_prompt.user_id,
                text=new_prompt.text, persona=persona, conversation_id=conversation_id, prompt=messages,
                adapter_version=live, backend=backend_name(self.router), sampling=self.sampling(persona).as_dict(),
                platform_message_id=new_prompt.platform_message_id, reply_to_id=new_prompt.reply_to_id)
        else:
            gen = await self._start(chat, persona, messages, live, prompt_message_id, conversation_id, retry_of_id)
        runner = self._run(gen, persona, messages, live)
        try:
            async for text, outcome in runner:
                if outcome is None:
                    yield Reply(key, text, message_ids=[gen.message_id], generation_ids=[gen.id])
                else:
                    yield self._final_reply(key, gen, text, outcome)
        finally:
            await runner.aclose()

    async def retry(self, chat, gen, limiter_key: str | None = None) -> AsyncIterator[Reply]:
        """Another answer to the prompt of `gen`, stored as its retry; the new answer replaces it in the history.
        `limiter_key`: the user whose accepted request this is, released when the answer ends."""
        try:
            conversation_id = ((await self.db.run(crud.get_message, message_id=gen.message_id)).conversation_id
                               if gen.message_id else chat.conversation_id)
            await self.db.run(crud.set_in_history, generation_id=gen.id, in_history=False)
            async with aclosing(self.generate(chat, gen.persona, gen.prompt, prompt_message_id=gen.prompt_message_id,
                                              conversation_id=conversation_id, retry_of_id=gen.id)) as replies:
                async for reply in replies:
                    if reply.final and reply.plain:  # the retry failed: the first answer stays in the history
                        await self.db.run(crud.set_in_history, generation_id=gen.id,
                                          in_history=gen.status in ("ok", "cut_off"))
                    yield reply
        finally:
            if limiter_key:
                await self.limiter.done(limiter_key)

    async def _record(self, chat, persona: str, conversation_id: str, new_prompt: NewPrompt):
        return await self.db.run(crud.record_message, chat_id=chat.id, user_id=new_prompt.user_id, role="user",
                                   text=new_prompt.text, persona=persona, conversation_id=conversation_id,
                                   platform_message_id=new_prompt.platform_message_id,
                                   reply_to_id=new_prompt.reply_to_id)

    async def live_version(self, persona: str) -> str | None:
        """The served name answering `persona` now (None = the base model); starts the router on first use."""
        start = getattr(self.router, "start", None)
        if callable(start):
            await resolve(start())
        return await resolve(self.router.route(persona))

    async def _start(self, chat, persona, messages, adapter, prompt_message_id, conversation_id, retry_of_id=None,
                     in_history=True):
        return await self.db.run(crud.start_generation, chat_id=chat.id, persona=persona, prompt=messages,
                                 prompt_message_id=prompt_message_id, conversation_id=conversation_id,
                                 adapter_version=adapter, backend=backend_name(self.router),
                                 sampling=self.sampling(persona).as_dict(), retry_of_id=retry_of_id,
                                 in_history=in_history)

    async def _run(self, gen, persona: str, messages: list[dict], adapter: str | None):
        """Yield (text so far, None) while streaming, then (text, outcome) once stored: outcome is
        "ok" | "cut_off" | a ServingError. A cancelled reply is stored as an error."""
        parts: list[str] = []
        started = time.perf_counter()
        finished: Finished | None = None
        error: ServingError | None = None
        stream = self.router.stream(persona, messages, sampling=self.sampling(persona), adapter=adapter)
        try:
            async with aclosing(stream):  # stopping early stops the model (and its in-flight count) at once
                async for item in stream:
                    if isinstance(item, TextChunk):
                        if item.text:
                            parts.append(item.text)
                            yield "".join(parts), None
                    elif isinstance(item, Finished):
                        finished = item
            if finished is None:
                error = ServingError("stream ended without a Finished item")
        except ServingError as e:
            error = e
        except (asyncio.CancelledError, GeneratorExit) as e:  # cancelled, or the platform stopped listening
            # shielded: a second cancellation must not lose the row's final state (the write runs on regardless)
            await asyncio.shield(self.db.run(
                crud.finish_reply, generation_id=gen.id, message_id=gen.message_id, text="".join(parts),
                status="error", error="cancelled" if isinstance(e, asyncio.CancelledError) else "abandoned",
                latency_ms=(time.perf_counter() - started) * 1000))
            raise
        except Exception as e:
            log.exception("backend failed for generation %s", gen.id)
            error = ServingError(f"{type(e).__name__}: {e}")
        text = "".join(parts)
        latency = (time.perf_counter() - started) * 1000
        if error is not None:
            await self.db.run(crud.finish_reply, generation_id=gen.id, message_id=gen.message_id, text=text,
                              status="error", error=f"{type(error).__name__}: {error}"[:2000], latency_ms=latency)
            yield text, error
            return
        status = "cut_off" if finished.finish_reason == "length" else "ok"
        await self.db.run(crud.finish_reply, generation_id=gen.id, message_id=gen.message_id, text=text,
                          status=status, finish_reason=finished.finish_reason, latency_ms=latency,
                          prompt_tokens=finished.prompt_tokens, completion_tokens=finished.completion_tokens)
        yield text, status

    def _final_reply(self, key: int, gen, text: str, outcome) -> Reply:
        if isinstance(outcome, ServingError):
            return Reply(key, outcome.user_message, final=True, buttons=buttons.retry_button(gen.id),
                         message_ids=[gen.message_id], generation_ids=[gen.id], plain=True)
        shown = text if text.strip() else "(no answer this time: press 🔄 for another try)"
        if outcome == "cut_off":
            shown += " …"
        return Reply(key, shown, final=True, buttons=buttons.vote_buttons(gen.id), message_ids=[gen.message_id],
                     generation_ids=[gen.id])

    async def _arena(self, chat, persona, messages, versions, prompt_message_id, conversation_id, key):
        gens = [await self._start(chat, persona, messages, v, prompt_message_id, conversation_id,
                                  in_history=(i == 0)) for i, v in enumerate(versions)]
        texts, outcomes = ["", ""], [None, None]
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int) -> None:
            try:
                async for text, outcome in self._run(gens[i], persona, messages, versions[i]):
                    await queue.put((i, text, outcome))
            finally:
                await queue.put((i, None, "done"))

        tasks = [asyncio.create_task(pump(i)) for i in range(2)]
        ids = {"message_ids": [g.message_id for g in gens], "generation_ids": [g.id for g in gens]}
        try:
            running = 2
            while running:
                i, text, outcome = await queue.get()
                if outcome == "done":
                    running -= 1
                    continue
                texts[i] = text
                if outcome is not None:
                    outcomes[i] = outcome
                else:
                    yield Reply(key, _ab_text(texts), **ids)
        finally:
            for t in tasks:
                t.cancel()
        good = [i for i in range(2) if outcomes[i] in ("ok", "cut_off")]
        if len(good) < 2:  # a failed candidate: show what there is as an ordinary reply
            if good:
                await self.db.run(crud.set_in_history, generation_id=gens[good[0]].id, in_history=True)
            for i in range(2):
                if i not in good:
                    await self.db.run(crud.set_in_history, generation_id=gens[i].id, in_history=False)
            i = good[0] if good else 0
            yield self._final_reply(key, gens[i], texts[i], outcomes[i])
            return
        user_id = await self._prompt_author(prompt_message_id)
        cmp = await self.db.run(crud.create_comparison, persona=persona, generation_a_id=gens[0].id,
                                generation_b_id=gens[1].id, user_id=user_id, source="chat")
        yield Reply(key, _ab_text(texts, [o == "cut_off" for o in outcomes]), final=True,
                    buttons=buttons.pick_buttons(cmp.id), comparison_id=cmp.id, **ids)

    async def _prompt_author(self, message_id: int | None) -> int | None:
        msg = await self.db.run(crud.get_message, message_id=message_id) if message_id else None
        return msg.user_id if msg else None

    async def delivered(self, reply: Reply, platform_message_id: str) -> None:
        """The platform shows `reply` as `platform_message_id`: remember it (reply chains, reactions), written
        behind, batched with the other replies of a burst; reading a platform id settles the queue first."""
        if reply.message_ids:
            self.db.later(crud.set_platform_message_ids, message_ids=list(reply.message_ids),
                          platform_message_id=str(platform_message_id))


def _ab_text(texts: list[str], cut: list[bool] | None = None) -> str:
    cut = cut or [False, False]
    shown = [(t if t.strip() else "…") + (" …" if c else "") for t, c in zip(texts, cut, strict=False)]
    return f"🅰️ A\n{shown[0]}\n\n🅱️ B\n{shown[1]}"
