"""MistralBackend: hosted models through the `mistralai` client. A persona's adapter version maps to a fine-tuned
model id (`ft:...`): `load_adapter(name, "ft:...")` records the mapping (the registry's `remote_model_id`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from loopbot.serving.base import DEFAULT_SAMPLING, AdapterInfo, Finished, SamplingParams, StreamItem, TextChunk
from loopbot.serving.errors import (
    BackendUnavailable,
    BadRequest,
    GenerationTimeout,
    ModelNotFound,
    Overloaded,
    ServingError,
)

log = logging.getLogger(__name__)


def _typed(error: Exception, what: str) -> ServingError:
    """mistralai exceptions (its transport is httpx or httpx2, matched by class name) -> our typed errors."""
    kinds = {c.__name__ for c in type(error).__mro__}
    status = getattr(error, "status_code", None)
    if status is not None:
        body = getattr(error, "body", "") or str(error)
        message = f"{what}: HTTP {status}: {str(body)[:300]}"
        if status == 404:
            return ModelNotFound(message)
        if status in (429, 503):
            return Overloaded(message)
        if status in (400, 422):
            return BadRequest(message)
        if status in (401, 403):
            return BackendUnavailable(f"{message} (check the API key variable, serving.mistral.api_key_env)")
        return ServingError(message)
    if kinds & {"ConnectError", "ConnectTimeout"}:
        return BackendUnavailable(f"{what}: cannot connect: {error!r}")
    if kinds & {"TimeoutException", "TimeoutError"}:
        return GenerationTimeout(f"{what}: timed out: {error!r}")
    if "HTTPError" in kinds:
        return BackendUnavailable(f"{what}: {error!r}")
    return ServingError(f"{what}: {error!r}")


def _text(content) -> str:
    """A delta's content: a string, or a list of content chunks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(getattr(c, "text", "") or "" for c in content)


class MistralBackend:
    """Mistral's chat API (or any server speaking it, at `server_url`)."""

    name = "mistral"

    def __init__(self, *, api_key: str, server_url: str = "https://api.mistral.ai", base_model: str = "open-mistral-7b",
                 timeout_s: float = 120.0, models: dict[str, str] | None = None):
        from mistralai.client import Mistral

        self.base_model = base_model
        self.timeout_s = timeout_s
        self.models: dict[str, str] = dict(models or {})  # served name (coach-v8) -> remote id (ft:...)
        self._client = Mistral(api_key=api_key, server_url=server_url.rstrip("/"), timeout_ms=int(timeout_s * 1000))

    async def stream(self, messages: list[dict], *, adapter: str | None = None,
                     sampling: SamplingParams = DEFAULT_SAMPLING) -> AsyncIterator[StreamItem]:
        if adapter is not None and adapter not in self.models:
            raise ModelNotFound(f"no fine-tuned model is registered for {adapter!r}")
        model = self.models[adapter] if adapter else self.base_model
        kwargs = {"model": model, "messages": messages, "temperature": sampling.temperature,
                  "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}
        if sampling.seed is not None:
            kwargs["random_seed"] = sampling.seed
        what = f"chat with {model}"
        try:
            events = await self._client.chat.stream_async(**kwargs)
        except Exception as e:
            raise _typed(e, what) from e
        finish, usage = "stop", None
        try:
            async with asyncio.timeout(self.timeout_s):
                async with events:
                    async for event in events:
                        chunk = event.data
                        usage = chunk.usage or usage
                        for choice in chunk.choices:
                            text = _text(choice.delta.content)
                            if text:
                                yield TextChunk(text)
                            if choice.finish_reason:
                                finish = str(choice.finish_reason)
        except ServingError:
            raise
        except Exception as e:
            raise _typed(e, what) from e
        yield Finished("length" if finish == "length" else "stop", int(getattr(usage, "prompt_tokens", 0) or 0),
                       int(getattr(usage, "completion_tokens", 0) or 0), adapter or model)

    async def load_adapter(self, name: str, path: str) -> None:
        """`path` is the fine-tuned model id (Adapter.remote_model_id), e.g. `ft:open-mistral-7b:abc:coach:v8`."""
        if not path:
            raise BadRequest(f"adapter {name!r}: the Mistral backend needs the fine-tuned model id (ft:...)")
        self.models[name] = path

    async def unload_adapter(self, name: str) -> None:
        if self.models.pop(name, None) is None:
            raise ModelNotFound(f"adapter {name!r} is not registered")

    async def list_adapters(self) -> list[AdapterInfo]:
        return [AdapterInfo(name, remote) for name, remote in sorted(self.models.items())]

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        close = getattr(self._client, "__aexit__", None)
        if close is not None:
            try:
                await close(None, None, None)
            except Exception:
                log.debug("closing the Mistral client failed", exc_info=True)
