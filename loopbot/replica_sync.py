"""`loopbot serve` with serving.vllm.adapters_from = "store": keep this host's vLLM server holding the adapter versions
the registry says it must serve, fetched from the artifact store into a local cache, never read from a trainer's disk.

Why this and not vLLM's LoRA resolver plugins: the filesystem resolver only looks in a local directory (something
still has to fetch into it, and it loads lazily on a user's first request, which then waits for the load), and a
resolver that reads S3 would need a plugin installed inside vLLM's own environment on every GPU host, checking
neither the content hash nor the base model. A sync loop beside vLLM uses the registry (which versions, their URIs
and hashes), the same fetch the trainer and the local backend use, and vLLM's runtime load/unload endpoints,
so a version is loaded before any bot routes a request to it.

Each pass: the versions wanted on this base model are every persona's active version and the version a rollback
would return to (so a rollback, and requests still on the previous version while the bots flip, never wait). A
wanted version missing on the server is fetched (hash-checked) and loaded; a loaded version no longer wanted is
unloaded once it has been unwanted for `unload_after_s` (the bots have flipped by then). The bots never load or
unload in this mode: their router waits until every replica lists a version before routing to it
(serving.vllm.VllmBackend with adapters_from = "store").
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopbot.base.artifacts import fetch, store_options
from loopbot.serving.errors import ServingError
from loopbot.serving.vllm import VllmBackend
from loopbot.storage import crud

log = logging.getLogger("loopbot.serve.sync")


@dataclass
class Wanted:
    name: str
    uri: str
    sha256: str | None
    published: bool = True  # False: a version from before the store, loaded from its recorded path


def wanted_versions(engine, settings, model: str) -> dict[str, Wanted]:
    """{served name: Wanted} for the personas whose base model is `model`: active + rollback target."""
    out: dict[str, Wanted] = {}
    for persona, p in settings.personas.items():
        if p.base_model != model:
            continue
        active = crud.active_adapter(engine, persona=persona)
        if active is None:
            continue
        rows = [active]
        previous = crud.rollback_target(engine, persona=persona, version=active.version)
        if previous is not None:
            row = crud.get_adapter(engine, persona=persona, version=previous)
            if row is not None:
                rows.append(row)
        for row in rows:
            if row.artifact_uri:
                out[row.name] = Wanted(row.name, row.artifact_uri, row.artifact_sha256)
            elif row.path and not row.remote_model_id:  # trained before the store: only where its disk is shared
                out[row.name] = Wanted(row.name, row.path, None, published=False)
    return out


@dataclass
class ReplicaSync:
    """Keeps one vLLM server (`url`, serving base model `model`) holding the wanted versions."""

    settings: object
    engine: object
    model: str
    url: str
    cache_dir: Path
    api_key: str | None = None
    unload_after_s: float = 60.0
    unwanted_since: dict[str, float] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vllm = VllmBackend([self.url], model=self.model, api_key=self.api_key)

    async def sync_once(self) -> dict[str, list[str]]:
        """One pass; returns {"loaded": [...], "unloaded": [...], "failed": [...]}."""
        done: dict[str, list[str]] = {"loaded": [], "unloaded": [], "failed": []}
        wanted = await asyncio.to_thread(wanted_versions, self.engine, self.settings, self.model)
        present = {a.name for a in await self.vllm.list_adapters()}
        for name, w in wanted.items():
            self.unwanted_since.pop(name, None)
            if name in present:
                continue
            try:
                local = w.uri if not w.published else await asyncio.to_thread(
                    fetch, w.uri, w.sha256, self.cache_dir, store_options(self.settings))
                await self.vllm.load_adapter(name, str(local))
                self.problems.pop(name, None)
                done["loaded"].append(name)
                log.info("loaded %s from %s on %s", name, w.uri, self.url)
            except (ServingError, Exception) as e:  # one bad version must not stop the others
                self.problems[name] = f"{type(e).__name__}: {e}"
                done["failed"].append(name)
                log.error("could not load %s from %s on %s: %s", name, w.uri, self.url, e)
        now = time.monotonic()
        for name in present - set(wanted):
            since = self.unwanted_since.setdefault(name, now)
            if now - since >= self.unload_after_s:
                try:
                    await self.vllm.unload_adapter(name)
                    done["unloaded"].append(name)
                    log.info("unloaded %s from %s (no longer live or a rollback target)", name, self.url)
                except ServingError as e:
                    log.error("could not unload %s from %s: %s", name, self.url, e)
                self.unwanted_since.pop(name, None)
        return done

    async def aclose(self) -> None:
        await self.vllm.aclose()


async def sync_forever(syncs: list[ReplicaSync], interval_s: float, stop: threading.Event,
                       first_pass: threading.Event | None = None) -> None:
    """Sync every server each `interval_s` until `stop` is set; `first_pass` is set after the first pass."""
    try:
        while not stop.is_set():
            for sync in syncs:
                try:
                    await sync.sync_once()
                except Exception as e:  # the database or the server is briefly away: try again next pass
                    log.error("adapter sync with %s failed: %s", sync.url, e)
            if first_pass is not None:
                first_pass.set()
            await asyncio.to_thread(stop.wait, interval_s)
    finally:
        for sync in syncs:
            await sync.aclose()


def start_sync_thread(syncs: list[ReplicaSync], interval_s: float, stop: threading.Event) -> tuple[threading.Thread,
                                                                                                      threading.Event]:
    """Run sync_forever in a daemon thread of its own (`loopbot serve` waits on its servers in the main thread)."""
    first = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(sync_forever(syncs, interval_s, stop, first)),
                              name="adapter-sync", daemon=True)
    thread.start()
    return thread, first
