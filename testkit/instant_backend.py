"""An instant in-process backend that echoes or plays scripted replies: for tests and the bot overhead benchmarks
(it costs nothing, so what is measured is the bot itself). The product never selects it (serving.backend)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from loopbot.serving.base import DEFAULT_SAMPLING, AdapterInfo, Finished, SamplingParams, StreamItem, TextChunk
from loopbot.serving.errors import ModelNotFound, ServingError

Script = Callable[[list[dict], str | None], str | ServingError]


def echo_script(messages: list[dict], adapter: str | None) -> str:
    """The default reply: which model answered and what the user said last."""
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"[{adapter or 'base'}] {last}"


class InstantBackend:
    """Replies come from `script(messages, adapter)` (a string, or a ServingError instance to raise),
    split into `chunk_chars` pieces with `delay_s` (seconds, or a function of the messages) between them;
    `max_tokens` counts words."""

    def __init__(self, script: Script = echo_script, *, chunk_chars: int = 8,
                 delay_s: float | Callable[[list[dict]], float] = 0.0, pauses: dict[int, float] | None = None,
                 name: str = "instant"):
        self.name = name
        self.script = script
        self.chunk_chars = max(1, chunk_chars)
        self.delay_s = delay_s
        self.pauses = pauses or {}  # chunk index -> an extra pause before it (a model that stalls)
        self.adapters: dict[str, str] = {}
        self.requests: list[dict] = []

    async def stream(self, messages: list[dict], *, adapter: str | None = None,
                     sampling: SamplingParams = DEFAULT_SAMPLING) -> AsyncIterator[StreamItem]:
        self.requests.append({"messages": messages, "adapter": adapter, "sampling": sampling})
        if adapter is not None and adapter not in self.adapters:
            raise ModelNotFound(f"adapter {adapter!r} is not loaded")
        reply = self.script(messages, adapter)
        if isinstance(reply, ServingError):
            raise reply
        words = reply.split(" ")
        finish = "stop"
        if len(words) > sampling.max_tokens:
            reply, finish = " ".join(words[:sampling.max_tokens]), "length"
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        delay = self.delay_s(messages) if callable(self.delay_s) else self.delay_s
        for n, i in enumerate(range(0, len(reply), self.chunk_chars)):
            if delay or n in self.pauses:
                await asyncio.sleep(delay + self.pauses.get(n, 0.0))
            yield TextChunk(reply[i:i + self.chunk_chars])
        yield Finished(finish, prompt_tokens, min(len(words), sampling.max_tokens), adapter or "base")

    async def load_adapter(self, name: str, path: str) -> None:
        self.adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        if self.adapters.pop(name, None) is None:
            raise ModelNotFound(f"adapter {name!r} is not loaded")

    async def list_adapters(self) -> list[AdapterInfo]:
        return [AdapterInfo(name, path) for name, path in self.adapters.items()]

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
