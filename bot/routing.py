"""What the chat core needs from serving: which version answers a persona, and a stream from it."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

from loopbot.serving.base import Backend, SamplingParams, StreamItem


class BackendRouter:
    """The Router interface over one backend, for tests and for installs without serving/router.py:
    the live version is the persona's active adapter in the database, if the backend has it loaded."""

    def __init__(self, backend: Backend, engine=None):
        self.backend = backend
        self.engine = engine

    async def route(self, persona: str) -> str | None:
        if self.engine is None:
            return None
        from loopbot.storage import crud

        active = crud.active_adapter(self.engine, persona=persona)
        if active is None:
            return None
        loaded = {a.name for a in await self.backend.list_adapters()}
        return active.name if active.name in loaded else None

    def stream(self, persona: str, messages: list[dict], *, sampling: SamplingParams = SamplingParams(),  # noqa: B008
               adapter: str | None = None) -> AsyncIterator[StreamItem]:
        return self.backend.stream(messages, adapter=adapter, sampling=sampling)


async def resolve(value: Any) -> Any:
    """Await `value` if it is awaitable (router methods may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


def backend_name(router: Any) -> str:
    backend = getattr(router, "backend", None)
    return getattr(backend, "name", "") or getattr(router, "name", "") or type(router).__name__
