"""VllmBackend: vLLM's OpenAI-compatible server over HTTP, for one or several replicas.

Requests go to the healthy replica with the fewest requests in flight. Adapter loads go to every replica (a failed
load on a reachable replica is undone on the others). A periodic re-sync loads what a restarted replica forgot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

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


@dataclass(eq=False)
class Replica:
    url: str
    healthy: bool = True
    in_flight: int = 0
    last_error: str = ""


def error_text(response: httpx.Response) -> str:
    """The server's own words: vLLM answers {"error": {"message": ...}} (new) or {"message": ...} (old)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return str(body)[:300]


def http_error(response: httpx.Response, what: str) -> ServingError:
    """The typed error for a non-2xx answer."""
    status, text = response.status_code, error_text(response)
    message = f"{what}: HTTP {status}: {text}"
    if status == 404:
        return ModelNotFound(message)
    if status in (429, 503):
        return Overloaded(message)
    if status in (400, 413, 422):
        return BadRequest(message)
    if status == 408 or status == 504:
        return GenerationTimeout(message)
    return ServingError(message)


def transport_error(error: httpx.HTTPError, what: str) -> ServingError:
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        return BackendUnavailable(f"{what}: cannot connect: {error!r}")
    if isinstance(error, httpx.TimeoutException):
        return GenerationTimeout(f"{what}: timed out: {error!r}")
    return BackendUnavailable(f"{what}: {error!r}")


class VllmBackend:
    """Client of one or several vLLM replicas (a list of base URLs)."""

    name = "vllm"

    def __init__(self, urls: list[str], *, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 120.0, connect_timeout_s: float = 5.0, resync_interval_s: float = 60.0,
                 adapters_from: str = "path", adapter_wait_s: float = 300.0, poll_s: float = 0.5):
        if not urls:
            raise ValueError("VllmBackend needs at least one replica URL")
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self._model = model
        self.timeout_s = timeout_s
        self.resync_interval_s = resync_interval_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
                                         limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                                         trust_env=False)
        self.desired: dict[str, str] = {}  # adapters that should be live on every replica: name -> path
        self._adapter_lock = asyncio.Lock()
        self._resync_task: asyncio.Task | None = None
        self._rr = 0
        # "store": `loopbot serve` beside each replica syncs adapters from the artifact store and loads them; this
        # client only waits until every replica holds a version (load) and never unloads (module doc of
        # loopbot.replica_sync)
        self.follows_store = adapters_from == "store"
        self.adapter_wait_s, self.poll_s = adapter_wait_s, poll_s

    # ---- replicas -------------------------------------------------------------------------------------------
    def _pick(self, exclude: set[int]) -> Replica | None:
        """The healthy replica with the fewest requests in flight (round robin on ties); any replica if none is."""
        candidates = [r for i, r in enumerate(self.replicas) if i not in exclude]
        healthy = [r for r in candidates if r.healthy] or candidates
        if not healthy:
            return None
        self._rr += 1
        order = sorted(range(len(healthy)), key=lambda i: (healthy[i].in_flight, (i - self._rr) % len(healthy)))
        return healthy[order[0]]

    def _mark_down(self, replica: Replica, error: str) -> None:
        if replica.healthy:
            log.warning("vLLM replica %s is unreachable: %s", replica.url, error)
        replica.healthy, replica.last_error = False, error

    async def base_model(self) -> str:
        """The base model's served name (configured, or the /v1/models entry without a parent)."""
        if self._model:
            return self._model
        last: ServingError | None = None
        for replica in self.replicas:
            try:
                models = await self._models(replica)
            except ServingError as e:
                last = e
                continue
            for m in models:
                if not m.get("parent"):
                    self._model = m["id"]
                    return self._model
        raise last or BackendUnavailable("no vLLM replica lists a base model")

    async def _models(self, replica: Replica) -> list[dict]:
        try:
            r = await self._client.get(f"{replica.url}/v1/models")
        except httpx.HTTPError as e:
            self._mark_down(replica, repr(e))
            raise transport_error(e, f"{replica.url} /v1/models") from e
        if r.status_code != 200:
            raise http_error(r, f"{replica.url} /v1/models")
        replica.healthy = True
        return r.json().get("data", [])

    # ---- streaming ------------------------------------------------------------------------------------------
    def _body(self, model: str, messages: list[dict], sampling: SamplingParams) -> dict:
        body = {"model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True},
                "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}
        if sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    async def stream(self, messages: list[dict], *, adapter: str | None = None,
                     sampling: SamplingParams = DEFAULT_SAMPLING) -> AsyncIterator[StreamItem]:
        self._ensure_resync_loop()
        model = adapter or await self.base_model()
        body = self._body(model, messages, sampling)
        tried: set[int] = set()
        while True:
            replica = self._pick(tried)
            if replica is None:
                raise BackendUnavailable(f"no vLLM replica reachable ({', '.join(r.url for r in self.replicas)})")
            tried.add(self.replicas.index(replica))
            started = False
            replica.in_flight += 1
            try:
                async with self._client.stream("POST", f"{replica.url}/v1/chat/completions", json=body) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        raise http_error(resp, f"chat with {model!r} on {replica.url}")
                    replica.healthy = True
                    finish, usage, served = "stop", {}, model
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if "error" in chunk:
                            raise ServingError(f"{replica.url}: {chunk['error']}")
                        served = chunk.get("model") or served
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                started = True
                                yield TextChunk(text)
                            if choice.get("finish_reason"):
                                finish = choice["finish_reason"]
                    yield Finished(finish, int(usage.get("prompt_tokens") or 0),
                                   int(usage.get("completion_tokens") or 0), served)
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                self._mark_down(replica, repr(e))
                if started:
                    raise transport_error(e, replica.url) from e
                continue  # nothing was sent yet: try another replica
            except httpx.HTTPError as e:
                if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
                    self._mark_down(replica, repr(e))
                raise transport_error(e, f"chat with {model!r} on {replica.url}") from e
            finally:
                replica.in_flight -= 1

    # ---- adapters -------------------------------------------------------------------------------------------
    async def _post(self, replica: Replica, path: str, body: dict) -> httpx.Response:
        try:
            return await self._client.post(f"{replica.url}{path}", json=body)
        except httpx.HTTPError as e:
            if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
                self._mark_down(replica, repr(e))
            raise transport_error(e, f"{replica.url} {path}") from e

    async def _load_on(self, replica: Replica, name: str, path: str) -> bool:
        """Load on one replica; True if this call loaded it, False if it was already there."""
        r = await self._post(replica, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if r.status_code == 200:
            replica.healthy = True
            return True
        if r.status_code == 400 and "already been loaded" in error_text(r):
            return False
        raise http_error(r, f"loading adapter {name!r} from {path} on {replica.url}")

    async def _unload_on(self, replica: Replica, name: str) -> bool:
        r = await self._post(replica, "/v1/unload_lora_adapter", {"lora_name": name})
        if r.status_code == 200:
            return True
        if r.status_code == 404:
            return False
        raise http_error(r, f"unloading adapter {name!r} on {replica.url}")

    async def _wait_held(self, name: str, location: str) -> None:
        """adapters_from = store: return once every reachable replica lists `name` (their `loopbot serve` fetched
        and loaded it); ServingError after adapter_wait_s naming the replicas that lack it."""
        deadline = time.monotonic() + self.adapter_wait_s
        while True:
            lacking, reached = [], 0
            for replica in self.replicas:
                try:
                    present = {m["id"] for m in await self._models(replica)}
                except BackendUnavailable:
                    continue
                reached += 1
                if name not in present:
                    lacking.append(replica.url)
            if reached and not lacking:
                self.desired[name] = location
                return
            if time.monotonic() >= deadline:
                where = ", ".join(lacking) if reached else "no replica reachable"
                raise ServingError(f"adapter {name!r} ({location}) is not loaded after {self.adapter_wait_s:.0f} s "
                                   f"({where}): is `loopbot serve` running beside each replica with the same "
                                   "database and artifact store?")
            await asyncio.sleep(self.poll_s)

    async def load_adapter(self, name: str, path: str) -> None:
        """Load on every replica (adapters_from = store: wait until every replica's `loopbot serve` has).
        An error answer from any replica undoes the load on the others and raises; an unreachable replica is skipped
        (re-sync loads it when it is back) unless none is reachable."""
        if self.follows_store:
            await self._wait_held(name, path)
            return
        self._ensure_resync_loop()
        async with self._adapter_lock:
            loaded: list[Replica] = []
            reached = 0
            unreachable: list[str] = []
            for replica in self.replicas:
                try:
                    if await self._load_on(replica, name, path):
                        loaded.append(replica)
                    reached += 1
                except BackendUnavailable as e:
                    unreachable.append(str(e))
                except ServingError:
                    for done in loaded:
                        with contextlib.suppress(ServingError):
                            await self._unload_on(done, name)
                    raise
            if not reached:
                raise BackendUnavailable(f"loading adapter {name!r}: no replica reachable: {'; '.join(unreachable)}")
            self.desired[name] = path

    async def unload_adapter(self, name: str) -> None:
        if self.follows_store:  # each replica's `loopbot serve` unloads what the registry no longer needs
            self.desired.pop(name, None)
            return
        async with self._adapter_lock:
            was_desired = self.desired.pop(name, None) is not None
            found = False
            for replica in self.replicas:
                try:
                    found = await self._unload_on(replica, name) or found
                except BackendUnavailable:
                    continue  # a replica that is down will not have it when it comes back
            if not found and not was_desired:
                raise ModelNotFound(f"adapter {name!r} is not loaded on any replica")

    async def list_adapters(self) -> list[AdapterInfo]:
        """Adapters loaded on every reachable replica (details: which replicas have each)."""
        per_replica: dict[str, list[str]] = {}
        paths: dict[str, str] = {}
        reachable = 0
        for replica in self.replicas:
            try:
                models = await self._models(replica)
            except BackendUnavailable:
                continue
            reachable += 1
            for m in models:
                if m.get("parent"):
                    per_replica.setdefault(m["id"], []).append(replica.url)
                    paths[m["id"]] = m.get("root") or ""
        if not reachable:
            raise BackendUnavailable("no vLLM replica reachable")
        return [AdapterInfo(name, self.desired.get(name, paths[name]), {"replicas": urls})
                for name, urls in sorted(per_replica.items()) if len(urls) == reachable]

    async def resync(self) -> dict[str, list[str]]:
        """Load on each reachable replica the desired adapters it lacks (a restarted vLLM forgot them)."""
        loaded: dict[str, list[str]] = {}
        if self.follows_store:  # `loopbot serve` re-loads what a restarted replica forgot
            return loaded
        async with self._adapter_lock:
            for replica in self.replicas:
                try:
                    present = {m["id"] for m in await self._models(replica)}
                except ServingError:
                    continue
                for name, path in list(self.desired.items()):
                    if name in present:
                        continue
                    try:
                        if await self._load_on(replica, name, path):
                            loaded.setdefault(replica.url, []).append(name)
                            log.info("re-sync: loaded %s on %s", name, replica.url)
                    except ServingError as e:
                        log.error("re-sync: could not load %s on %s: %s", name, replica.url, e)
        return loaded

    def _ensure_resync_loop(self) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.get_running_loop().create_task(self._resync_forever())

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval_s)
            try:
                await self.resync()
            except Exception:
                log.exception("re-sync failed")

    async def health(self) -> bool:
        ok = False
        for replica in self.replicas:
            try:
                r = await self._client.get(f"{replica.url}/health", timeout=5.0)
                replica.healthy = r.status_code == 200
            except httpx.HTTPError as e:
                self._mark_down(replica, repr(e))
            ok = ok or replica.healthy
        return ok

    async def aclose(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._resync_task
        await self._client.aclose()
