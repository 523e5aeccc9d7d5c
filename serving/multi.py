"""ModelBackends: one backend per base model (a local worker each, or the vLLM servers of each model), seen as one.

The router sends each persona to `for_model(its base model)`. Used directly, as a Backend, it serves the base model
of `default` for adapter=None, an adapter from the backend that has it loaded, and loads an adapter on the base
model its adapter_config.json names (refusing one that names none of them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from loopbot.serving.base import DEFAULT_SAMPLING, AdapterInfo, Backend, SamplingParams, StreamItem
from loopbot.serving.base_models import BaseModelCheck
from loopbot.serving.errors import ModelNotFound, WrongBaseModel


class ModelBackends:
    """{base model name: Backend}, all of one kind; `default` is the default persona's base model."""

    def __init__(self, backends: dict[str, Backend], *, default: str, check: BaseModelCheck | None = None):
        if default not in backends:
            raise ValueError(f"default model {default!r} is not one of {sorted(backends)}")
        self.backends = dict(backends)
        self.default = default
        self.check = check
        self.name = backends[default].name

    @property
    def models(self) -> list[str]:
        return list(self.backends)

    def for_model(self, model: str) -> Backend:
        try:
            return self.backends[model]
        except KeyError:
            raise ModelNotFound(f"no backend serves base model {model!r} (served: {', '.join(self.backends)})") \
                from None

    async def _holder(self, adapter: str) -> Backend:
        for backend in self.backends.values():
            if adapter in {a.name for a in await backend.list_adapters()}:
                return backend
        raise ModelNotFound(f"adapter {adapter!r} is not loaded on any base model")

    async def stream(self, messages: list[dict], *, adapter: str | None = None,
                     sampling: SamplingParams = DEFAULT_SAMPLING) -> AsyncIterator[StreamItem]:
        backend = self.backends[self.default] if adapter is None else await self._holder(adapter)
        async for item in backend.stream(messages, adapter=adapter, sampling=sampling):
            yield item

    async def load_adapter(self, name: str, path: str) -> None:
        """Load on the base model the adapter was trained on."""
        model = self.check.trained_on(path) if self.check else None
        if model is None or model not in self.backends:
            raise WrongBaseModel(f"adapter {name!r} at {path}: its adapter_config.json names none of the served base "
                                 f"models ({', '.join(self.backends)}); load it through the router, for a persona")
        await self.backends[model].load_adapter(name, path)

    async def unload_adapter(self, name: str) -> None:
        await (await self._holder(name)).unload_adapter(name)

    async def list_adapters(self) -> list[AdapterInfo]:
        """Every base model's adapters; details name the base model of each."""
        found: list[AdapterInfo] = []
        for model, backend in self.backends.items():
            found += [AdapterInfo(a.name, a.path, {**a.details, "base_model": model})
                      for a in await backend.list_adapters()]
        return sorted(found, key=lambda a: a.name)

    async def resync(self) -> dict:
        loaded: dict = {}
        for backend in self.backends.values():
            if hasattr(backend, "resync"):
                loaded.update(await backend.resync())
        return loaded

    async def health(self) -> bool:
        """Healthy when every base model's backend is (a persona whose model is down cannot answer)."""
        results = await asyncio.gather(*(b.health() for b in self.backends.values()))
        return all(results)

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))
