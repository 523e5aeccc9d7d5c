"""What the chat core needs to talk to serving's router: await its sync-or-async methods, name its backend."""

from __future__ import annotations

import inspect
from typing import Any


async def resolve(value: Any) -> Any:
    """Await `value` if it is awaitable (router methods may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


def backend_name(router: Any) -> str:
    backend = getattr(router, "backend", None)
    return getattr(backend, "name", "") or getattr(router, "name", "") or type(router).__name__
