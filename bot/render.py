"""Showing a reply stream on a chat platform: split at the platform's limit, edit in place at most once per
interval, never repeat an identical edit, and always deliver the final state (with its buttons)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from loopbot.bot import buttons as core_buttons
from loopbot.bot.messages import Button, Reply

log = logging.getLogger(__name__)


class RateLimited(Exception):
    """The platform asked us to wait `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class TooLong(Exception):
    """The platform refused a message as too long even as plain text: it counts differently from `Sink.measure`."""


class Sink(Protocol):
    """One chat on one platform. `send` returns the new message's id; both raise RateLimited when told to wait
    and TooLong when the text is over the platform's limit. A sink may define `measure(text, plain) -> int`: the
    length of `text` as it will be sent (e.g. after formatting); without it, parts are sized by len(text)."""

    limit: int

    async def send(self, text: str, buttons: list[list[Button]], plain: bool) -> str: ...

    async def edit(self, message_id: str, text: str, buttons: list[list[Button]], plain: bool) -> None: ...

    async def typing(self) -> None: ...


def split_text(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """Pieces whose `measure` (the length as sent) is at most `limit`, cut at a paragraph, line, sentence or word
    boundary when possible."""
    text = text or "…"
    parts: list[str] = []
    while measure(text) > limit:
        n = _fitting(text, limit, measure)
        window = text[:n]
        cut = max(window.rfind("\n\n"), window.rfind("\n"))
        if cut < n // 2:
            cut = max(window.rfind(". "), window.rfind(" "))
        cut = cut + 1 if cut >= n // 2 else n
        part = text[:cut].rstrip() or text[:cut]
        while cut > 1 and measure(part) > limit:  # formatting need not grow evenly: shrink until it fits
            cut = max(1, cut - max(1, measure(part) - limit))
            part = text[:cut].rstrip() or text[:cut]
        parts.append(part)
        text = text[cut:].lstrip() or "…"
    parts.append(text)
    return parts


def _fitting(text: str, limit: int, measure: Callable[[str], int]) -> int:
    """The longest prefix length of `text` whose measure is at most `limit` (at least 1); len needs no search."""
    if measure is len:
        return min(limit, len(text))
    lo, hi = 1, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


_CODE_BLOCK = re.compile(r"```(?:[\w+-]*\n)?(.+?)```", re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.DOTALL)


def markdown_to_html(text: str) -> str:
    """The Markdown a model writes (**bold**, `code`, ```blocks```) as Telegram HTML; everything else escaped."""
    out = html.escape(text, quote=False)
    out = _CODE_BLOCK.sub(lambda m: f"<pre>{m.group(1)}</pre>", out)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    return _BOLD.sub(lambda m: f"<b>{m.group(1)}</b>", out)


STOPPED_NOTE = "(stopped)"
MIN_LIMIT = 256  # re-splitting after "too long" goes no lower than this


@dataclass
class _Shown:
    ids: list[str] = field(default_factory=list)
    states: list[tuple] = field(default_factory=list)  # what each message shows now: (text, buttons, plain)
    last_change: float = 0.0
    blocked_until: float = 0.0
    reply: Reply | None = None  # the last state shown


class Renderer:
    """Consume a reply stream and show it through a sink. Calls (and awaits, if a coroutine function)
    `on_final(reply, platform_message_id)` once the final state of each outgoing message is on screen (the id is
    the message that carries the buttons)."""

    def __init__(self, sink: Sink, *, interval_s: float, on_final=None, typing_after_s: float = 0.3,
                 final_attempts: int = 5, clock=time.monotonic):
        self.sink = sink
        self.interval_s = interval_s
        self.on_final = on_final
        self.typing_after_s = typing_after_s
        self.final_attempts = final_attempts
        self.clock = clock
        self.edits = 0
        self.limit = sink.limit  # lowered when the platform says "too long" to what we sized as fitting
        self._queue: asyncio.Queue | None = None
        self._stopping = False

    def stop(self) -> None:
        """Stop early (the process is shutting down): the model stream is closed and every message already on
        screen gets a final state, the text so far with a "(stopped)" note; `run` then returns."""
        self._stopping = True
        if self._queue is not None:
            self._queue.put_nowait(_STOP)

    async def run(self, replies: AsyncIterator[Reply]) -> None:
        start = self.clock()
        shown: dict[int, _Shown] = {}
        pending: dict[int, Reply] = {}
        typing = asyncio.create_task(self._typing_later()) if self.typing_after_s >= 0 else None
        # one task reads the stream into a queue: states that arrive together are taken together (only the newest
        # is shown), and a state held back by the interval is shown when due even if the model stalls
        queue: asyncio.Queue = asyncio.Queue()
        self._queue = queue
        if self._stopping:
            queue.put_nowait(_STOP)
        reader = asyncio.create_task(_read_into(replies, queue))
        try:
            while True:
                if pending and queue.empty():
                    try:
                        async with asyncio.timeout(self._next_due(shown, pending)):
                            item = await queue.get()
                    except TimeoutError:
                        await self._show_due(shown, pending, typing)
                        continue
                else:
                    item = await queue.get()
                if item is _STOP:
                    if typing:
                        typing.cancel()
                    await self._stop_reader(reader)
                    await self._show_stopped(shown, pending)
                    return
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                reply = item
                if not reply.final and not reply.text.strip():
                    continue  # nothing to show yet (a model's first token can be a bare newline)
                st = shown.setdefault(reply.key, _Shown(last_change=start))
                now = self.clock()
                if not reply.final and (now - st.last_change < self.interval_s or now < st.blocked_until):
                    pending[reply.key] = reply
                    continue
                pending.pop(reply.key, None)
                if typing:
                    typing.cancel()
                await self._show(st, reply)
            for key, reply in pending.items():  # a stream that ended without a final state
                await self._show(shown[key], reply)
        finally:
            if typing:
                typing.cancel()
            await self._stop_reader(reader)
            close = getattr(replies, "aclose", None)
            if close is not None:  # a stream abandoned half-way still stores its reply and frees the user's slot
                await close()

    @staticmethod
    async def _stop_reader(reader: asyncio.Task) -> None:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _show_stopped(self, shown: dict[int, _Shown], pending: dict[int, Reply]) -> None:
        """The final state of each message on screen when stopped early: its text so far and a note, with a
        🔄 button (a stopped reply is stored as failed, so it can be tried again after the restart)."""
        for key, st in shown.items():
            last = pending.get(key) or st.reply
            if last is None or last.final:
                continue
            retry = core_buttons.retry_button(last.generation_ids[0]) if len(last.generation_ids) == 1 else []
            stopped = Reply(key, f"{last.text.rstrip()}\n\n{STOPPED_NOTE}", final=True, buttons=retry,
                            message_ids=last.message_ids, generation_ids=last.generation_ids, plain=True)
            try:
                await self._show(st, stopped)
            except Exception:  # best effort while shutting down: the reply is stored
                log.warning("could not mark a reply as stopped", exc_info=True)

    def _next_due(self, shown: dict[int, _Shown], pending: dict[int, Reply]) -> float | None:
        """Seconds until the earliest held-back state may be shown (None: nothing is held back)."""
        if not pending:
            return None
        now = self.clock()
        return max(0.0, min(max(shown[k].last_change + self.interval_s, shown[k].blocked_until) - now
                            for k in pending))

    async def _show_due(self, shown: dict[int, _Shown], pending: dict[int, Reply], typing) -> None:
        now = self.clock()
        for key in [k for k in pending if now >= max(shown[k].last_change + self.interval_s, shown[k].blocked_until)]:
            if typing:
                typing.cancel()
            await self._show(shown[key], pending.pop(key))

    async def _typing_later(self) -> None:
        await asyncio.sleep(self.typing_after_s)
        try:
            await self.sink.typing()
        except Exception:
            log.debug("typing indicator failed", exc_info=True)

    async def _show(self, st: _Shown, reply: Reply) -> None:
        while True:
            try:
                parts = await self._show_parts(st, reply)
                break
            except TooLong:
                if self.limit <= MIN_LIMIT:
                    raise
                self.limit = max(MIN_LIMIT, self.limit * 3 // 4)
                log.info("the platform said a part was too long; splitting at %d characters", self.limit)
        if parts is None:
            return
        st.last_change = self.clock()
        st.reply = reply
        if reply.final and self.on_final and st.ids:
            done = self.on_final(reply, st.ids[len(parts) - 1])
            if inspect.isawaitable(done):
                await done

    async def _show_parts(self, st: _Shown, reply: Reply) -> list[str] | None:
        """Show `reply` split into parts that fit; None when an intermediate state was skipped (rate limited)."""
        plain = reply.plain or not reply.final
        measure = getattr(self.sink, "measure", None)
        parts = split_text(reply.text, self.limit, (lambda t: measure(t, plain)) if measure else len)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            state = (part, reply.buttons if (reply.final and last) else [], plain)
            if i < len(st.ids) and st.states[i] == state:
                continue
            try:
                await self._deliver(st, i, state, final=reply.final)
            except RateLimited as e:
                st.blocked_until = self.clock() + e.retry_after
                if not reply.final:
                    return None  # an intermediate state can be skipped; the next one will catch up
                raise
        return parts

    async def _deliver(self, st: _Shown, i: int, state: tuple, *, final: bool) -> None:
        attempts = self.final_attempts if final else 1
        for attempt in range(attempts):
            wait = st.blocked_until - self.clock()
            if wait > 0:  # the platform told us to wait: a final state waits, an intermediate one is skipped
                if not final:
                    raise RateLimited(wait)
                await asyncio.sleep(wait)
            try:
                if i < len(st.ids):
                    await self.sink.edit(st.ids[i], *state)
                    self.edits += 1
                    st.states[i] = state
                else:
                    st.ids.append(await self.sink.send(*state))
                    st.states.append(state)
                return
            except RateLimited as e:
                st.blocked_until = self.clock() + e.retry_after
                if attempt == attempts - 1:
                    raise


_END = object()
_STOP = object()


class InProgress:
    """The replies a platform adapter is showing now, so that stopping can finish them before the client closes:
    each renderer is told to stop (its message gets a final state), then late handlers are cancelled."""

    def __init__(self):
        self.stopping = False
        self._running: dict[Renderer, asyncio.Task | None] = {}

    def __len__(self) -> int:
        return len(self._running)

    def add(self, renderer: Renderer) -> None:
        self._running[renderer] = asyncio.current_task()
        if self.stopping:
            renderer.stop()

    def discard(self, renderer: Renderer) -> None:
        self._running.pop(renderer, None)

    async def finish(self, grace_s: float) -> None:
        """Stop every renderer and wait up to `grace_s` for their handlers; cancel the ones still running."""
        self.stopping = True
        running = dict(self._running)
        for renderer in running:
            renderer.stop()
        tasks = {t for t in running.values() if t is not None and t is not asyncio.current_task() and not t.done()}
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_s)
        for task in late:
            task.cancel()
        if late:
            log.info("cancelled %d repl%s that did not stop within %.0f s", len(late),
                     "y" if len(late) == 1 else "ies", grace_s)
            await asyncio.wait(late, timeout=1.0)


async def _read_into(replies: AsyncIterator[Reply], queue: asyncio.Queue) -> None:
    """Put every state of `replies` on `queue`, then an error it raised (if any), then _END."""
    try:
        async for reply in replies:
            queue.put_nowait(reply)
    except Exception as e:
        queue.put_nowait(e)
    finally:
        queue.put_nowait(_END)
