"""The one interface every backend implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from loopbot.serving.errors import ServingError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int | None = None

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "repetition_penalty": self.repetition_penalty, "seed": self.seed}


# The default of every `sampling=` parameter: one shared instance, safe because SamplingParams is frozen.
DEFAULT_SAMPLING = SamplingParams()


@dataclass(frozen=True)
class TextChunk:
    """A piece of the reply, in order."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The last item of every stream."""

    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    served_model: str = ""  # the adapter / model name that actually answered


StreamItem = TextChunk | Finished


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: str = ""
    details: dict = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """Stream replies for chat messages, from the base model (adapter=None) or a loaded LoRA adapter."""

    name: str

    def stream(self, messages: list[dict], *, adapter: str | None = None,
               sampling: SamplingParams = DEFAULT_SAMPLING) -> AsyncIterator[StreamItem]:
        """Async iterator of TextChunk..., then exactly one Finished. Cancelling the consumer stops generation."""
        ...

    async def load_adapter(self, name: str, path: str) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...

    async def list_adapters(self) -> list[AdapterInfo]: ...

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...


async def complete(backend: Backend, messages: list[dict], *, adapter: str | None = None,
                   sampling: SamplingParams = DEFAULT_SAMPLING) -> tuple[str, Finished]:
    """Collect a whole reply (for smoke tests, judges and the demo)."""
    parts: list[str] = []
    finished: Finished | None = None
    async for item in backend.stream(messages, adapter=adapter, sampling=sampling):
        if isinstance(item, TextChunk):
            parts.append(item.text)
        else:
            finished = item
    if finished is None:
        raise ServingError("stream ended without a Finished item")
    return "".join(parts), finished
