"""Router: persona -> served adapter name, in-flight counting per name, and serialised hot swaps.

A swap loads the new version under a NEW name, smoke-tests it, flips the route, and unloads the previous version
once no request uses it any more (or after the grace period). A failed load or smoke test leaves the old route.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from loopbot.serving.base import DEFAULT_SAMPLING, Backend, SamplingParams, StreamItem, complete
from loopbot.serving.errors import ServingError, SwapFailed, WrongBaseModel

log = logging.getLogger(__name__)


class _Live:
    def __repr__(self) -> str:
        return "LIVE"


LIVE = _Live()
"""`adapter=LIVE`: the persona's current route (the default)."""

RETIRE_MIN_S = 0.5  # an old version stays loaded at least this long after the flip (within the grace period)
SMOKE_MESSAGES = [{"role": "user", "content": "Hello! Say hi in a few words."}]


@dataclass(frozen=True)
class SwapResult:
    persona: str
    old: str | None
    new: str | None
    seconds: float
    smoke_reply: str = ""


class Router:
    """Route each persona to its live adapter (None = the base model) on the backend of its base model.

    `backend` is one backend, or a ModelBackends (one backend per base model: `for_model(name)`); then
    `persona_models` = {persona: base model name} picks each persona's. `check` (a BaseModelCheck) refuses an
    adapter whose adapter_config.json names another base model than its persona's, before anything is loaded."""

    def __init__(self, backend: Backend, *, routes: dict[str, tuple[str, str] | None] | None = None,
                 unload_grace_s: float = 30.0, smoke_messages: list[dict] | None = None,
                 smoke_prompts: dict[str, list[str]] | None = None, smoke_max_tokens: int = 8,
                 smoke_timeout_s: float = 120.0, persona_models: dict[str, str] | None = None, check=None):
        self.backend = backend
        self.persona_models = dict(persona_models or {})
        self.check = check
        self._homes: dict[str, Backend] = {}  # served name -> the backend it was loaded on
        self.unload_grace_s = unload_grace_s
        self.smoke_messages = smoke_messages or SMOKE_MESSAGES
        self.smoke_prompts = smoke_prompts or {}  # persona -> prompts; the first one smoke-tests its new versions
        self.smoke_max_tokens = smoke_max_tokens
        self.smoke_timeout_s = smoke_timeout_s
        self._routes: dict[str, str | None] = {}
        self.paths: dict[str, str] = {}  # served name -> adapter path (or remote model id)
        self.in_flight: collections.Counter = collections.Counter()  # served name (None = base) -> requests
        self.problems: dict[str, str] = {}  # persona -> why its desired adapter is not live
        self._initial = routes
        self._started = routes is None
        self._start_lock = asyncio.Lock()
        self._swap_lock = asyncio.Lock()
        self._retiring: dict[str, asyncio.Task] = {}
        self._idle: dict[str, asyncio.Event] = {}  # served name being retired -> set when its in_flight drops to 0

    # ---- routing --------------------------------------------------------------------------------------------
    def backend_for(self, persona: str | None) -> Backend:
        """The backend that serves `persona`'s base model."""
        pick = getattr(self.backend, "for_model", None)
        model = self.persona_models.get(persona or "")
        if pick is None or model is None:
            return self.backend
        return pick(model)

    def check_adapter(self, persona: str, name: str, path: str | None) -> None:
        """Raise WrongBaseModel if the adapter at `path` was trained on another base model than `persona`'s."""
        model = self.persona_models.get(persona)
        if self.check is not None and path and model is not None:
            self.check.check(model, name, path)

    def route(self, persona: str) -> str | None:
        """The served name that answers `persona` now (None = the base model)."""
        return self._routes.get(persona)

    def routes(self) -> dict[str, str | None]:
        return dict(self._routes)

    async def start(self) -> None:
        """Load the adapters the router was built with (the DB's active ones); done once, on first use."""
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self.reconcile(self._initial or {})
                self._started = True

    async def stream(self, persona: str, messages: list[dict], *, sampling: SamplingParams = DEFAULT_SAMPLING,
                     adapter: str | _Live | None = LIVE) -> AsyncIterator[StreamItem]:
        await self.start()
        name = self._routes.get(persona) if adapter is LIVE else adapter
        self.in_flight[name] += 1
        try:
            async for item in self.backend_for(persona).stream(messages, adapter=name, sampling=sampling):
                yield item
        finally:
            self.in_flight[name] -= 1
            if self.in_flight[name] == 0 and name in self._idle:
                self._idle[name].set()

    async def complete(self, persona: str, messages: list[dict], *, sampling: SamplingParams = DEFAULT_SAMPLING,
                       adapter: str | _Live | None = LIVE):
        """The whole reply: (text, Finished)."""
        parts, finished = [], None
        async for item in self.stream(persona, messages, sampling=sampling, adapter=adapter):
            if hasattr(item, "text"):
                parts.append(item.text)
            else:
                finished = item
        return "".join(parts), finished

    # ---- swaps ----------------------------------------------------------------------------------------------
    async def _loaded(self, backend: Backend | None = None) -> set[str]:
        return {a.name for a in await (backend or self.backend).list_adapters()}

    async def smoke_test(self, name: str | None, persona: str | None = None) -> str:
        """A short greedy generation with `name`; raises if it errors (an empty reply is allowed)."""
        sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=self.smoke_max_tokens, seed=0)
        prompts = self.smoke_prompts.get(persona or "") or []
        messages = [{"role": "user", "content": prompts[0]}] if prompts else self.smoke_messages
        async with asyncio.timeout(self.smoke_timeout_s):
            text, _ = await complete(self.backend_for(persona), messages, adapter=name, sampling=sampling)
        return text

    async def swap(self, persona: str, name: str | None, path: str | None = None) -> SwapResult:
        """Serve `persona` from adapter `name` at `path` (None = the base model). Serialised; see the module doc."""
        async with self._swap_lock:
            await self.start()
            started = time.monotonic()
            old = self._routes.get(persona)
            if name == old:
                return SwapResult(persona, old, name, 0.0)
            where = old or "the base model"
            smoke = ""
            backend = self.backend_for(persona)
            if name is not None:
                try:  # before anything changes: an adapter of another base model is never loaded
                    self.check_adapter(persona, name, path)
                except WrongBaseModel as e:
                    raise SwapFailed(f"{persona}: {e}; {persona} stays on {where}") from e
                retiring = self._retiring.pop(name, None)
                if retiring is not None:
                    retiring.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await retiring
                if path:  # loading is idempotent for the same (name, path); it also tells vLLM's re-sync
                    try:
                        await backend.load_adapter(name, path)
                        self._homes[name] = backend
                    except ServingError as e:
                        raise SwapFailed(f"{persona}: loading {name} from {path} failed ({e}); "
                                         f"{persona} stays on {where}") from e
                elif name not in await self._loaded(backend):
                    raise SwapFailed(f"{persona}: no path for adapter {name!r}; {persona} stays on {where}")
                try:
                    smoke = await self.smoke_test(name, persona)
                except (ServingError, TimeoutError) as e:
                    with contextlib.suppress(ServingError):
                        await backend.unload_adapter(name)
                    raise SwapFailed(f"{persona}: smoke test of {name} failed ({e!r}); "
                                     f"{persona} stays on {where}") from e
                if path:
                    self.paths[name] = path
            self._routes[persona] = name
            self.problems.pop(persona, None)
            log.info("swap %s: %s -> %s", persona, where, name or "the base model")
            if old is not None:
                self._retire(old)
            return SwapResult(persona, old, name, time.monotonic() - started, smoke)

    def _retire(self, name: str) -> None:
        """Unload `name` once no request uses it (or after the grace period), unless a persona routes to it."""
        if name in self._routes.values() or name in self._retiring:
            return
        self._retiring[name] = asyncio.get_running_loop().create_task(self._unload_when_idle(name))

    async def _unload_when_idle(self, name: str) -> None:
        deadline = time.monotonic() + self.unload_grace_s
        try:
            # a caller that read route() just before the flip may not have started its stream yet: give it a moment
            await asyncio.sleep(min(self.unload_grace_s, RETIRE_MIN_S))
            idle = self._idle[name] = asyncio.Event()
            while self.in_flight[name] > 0 and (left := deadline - time.monotonic()) > 0:
                idle.clear()  # a request that started after the last wake-up: wait for it too
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle.wait(), left)
            if name in self._routes.values():
                return
            if self.in_flight[name] > 0:
                log.warning("unloading %s after the %.0f s grace period with %d requests still on it",
                            name, self.unload_grace_s, self.in_flight[name])
            try:
                await self._homes.get(name, self.backend).unload_adapter(name)
                self.paths.pop(name, None)
                self._homes.pop(name, None)
            except ServingError as e:
                log.error("could not unload %s: %s", name, e)
        finally:
            if self._retiring.get(name) is asyncio.current_task():
                del self._retiring[name]
                self._idle.pop(name, None)

    async def drain(self) -> None:
        """Wait for every pending unload of a retired version."""
        while self._retiring:
            await asyncio.gather(*list(self._retiring.values()), return_exceptions=True)

    async def reconcile(self, desired: dict[str, tuple[str, str] | None]) -> dict[str, str | None]:
        """Make the backend serve `desired` = {persona: (name, path) or None}: load what is missing, set the routes,
        retire versions no persona uses any more. A version that cannot be loaded is reported in `problems` and its
        persona keeps its current route if that is loaded, else the base model."""
        loaded_on: dict[int, set[str]] = {}
        old_names = {n for n in self._routes.values() if n}
        for persona, target in desired.items():
            name, path = target if target else (None, None)
            backend = self.backend_for(persona)
            if id(backend) not in loaded_on:
                loaded_on[id(backend)] = await self._loaded(backend)
            loaded = loaded_on[id(backend)]
            if name and (path or name not in loaded):
                try:
                    self.check_adapter(persona, name, path)
                    await backend.load_adapter(name, path)
                    self._homes[name] = backend
                    loaded.add(name)
                except ServingError as e:
                    log.error("reconcile %s: could not load %s from %s: %s", persona, name, path, e)
                    self.problems[persona] = f"could not load {name} from {path}: {e}"
                    current = self._routes.get(persona)
                    self._routes[persona] = current if current in loaded else None
                    continue
            if self._routes.get(persona, name) != name:
                log.info("route %s: %s -> %s", persona, self._routes[persona] or "the base model",
                         name or "the base model")
            self._routes[persona] = name
            self.problems.pop(persona, None)
            if name and path:
                self.paths[name] = path
        if hasattr(self.backend, "resync"):
            await self.backend.resync()
        for name in old_names - {n for n in self._routes.values() if n}:
            self._retire(name)
        return self.routes()

    async def aclose(self) -> None:
        for task in list(self._retiring.values()):
            task.cancel()
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
        self._retiring.clear()
