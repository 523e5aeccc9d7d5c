"""Adapter registry operations: promote, roll back, and the live watch that rolls back a worse version by itself.

Promotion = the running router's hot swap (when this process serves chats), then one transaction that makes the
version the only active one and records why (`crud.activate_adapter` and the audit events). In a process without
a router (a CLI command) only the database changes; the running `loopbot run` converges to it (trainer.schedule
calls `reconcile_router`).

Rollback returns to `rollback_target`: the newest version served before the live one that may serve again, or the
base model (`crud.rollback_target`). The CLI, the bots' /rollback, the dashboard and the live watch all use it.

Live watch (a documented test): after a promotion, the new version's 👍 share over its first `watch_votes` votes is
compared with the 👍 share of the version a rollback would return to (all its votes before the promotion) by a
one-sided two-proportion z-test with pooled variance, H1: p_new < p_old. If the p-value is below
1 - `watch_confidence`, the new version is rolled back and the reason (rates, counts, p-value) is recorded on the
adapter and in the event log.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from loopbot.base import artifacts
from loopbot.base.artifacts import open_store
from loopbot.base.errors import LoopbotError, UsageError
from loopbot.storage import crud
from loopbot.storage.db import Session, transaction
from loopbot.storage.models import Adapter

log = logging.getLogger(__name__)

Write = Callable[[Session], None]  # more writes that belong with an activation, done in its transaction


def running_router(loopbot):
    """The router this process serves chats with, if it has been built (never builds one)."""
    return vars(loopbot).get("router")


def follows_store(router) -> bool:
    """Whether the router's backends load adapters themselves from the artifact store (vLLM, adapters_from = store)."""
    backends = getattr(router.backend, "backends", None)
    parts = backends.values() if isinstance(backends, dict) else [router.backend]
    return any(getattr(b, "follows_store", False) for b in parts)


def _servable(row: Adapter) -> str:
    """The artifact URI, path or remote model id to serve `row` from; raises if there is none. A published version
    is served from the artifact store (checked by its manifest: one small request), so every serving host gets
    it from there, not from the training worker's disk."""
    if row.remote_model_id:
        return row.remote_model_id
    if row.artifact_uri:
        if not artifacts.exists(row.artifact_uri):
            raise LoopbotError(f"{row.name}: no artifact at {row.artifact_uri} (its {artifacts.ARTIFACT_MANIFEST} "
                               "is missing from the store)")
        return row.artifact_uri
    if not row.path or not (Path(row.path) / "adapter_config.json").is_file():
        raise LoopbotError(f"{row.name}: no adapter files at {row.path or '(no path)'}")
    return row.path


def _route(row: Adapter | None) -> tuple[str | None, str | None]:
    """(served name, path) to route to `row`; (None, None) for the base model."""
    return (row.name, _servable(row)) if row is not None else (None, None)


async def _switch(loopbot, persona: str, target: Adapter | None, current: Adapter | None, write: Write) -> None:
    """Serve `target` instead of `current`: this process's router swaps first, then `write` records it in one
    transaction; if that fails, the router goes back to `current` (it serves what the database says is active)."""
    router = running_router(loopbot)
    if router is not None and follows_store(router):
        # the replicas load a version once the registry says it is live (their `loopbot serve` syncs from the
        # artifact store): record it first, then flip this process's route once every replica holds it; a flip that
        # fails keeps the old route and is retried by the next reconcile (other processes follow the same way)
        with transaction(loopbot.engine) as session:
            write(session)
        try:
            await router.swap(persona, *_route(target))
        except Exception as e:
            log.error("%s: recorded as live, not yet routed here: %s (retried at the next reconcile)", persona, e)
        return
    if router is not None:
        await router.swap(persona, *_route(target))
    try:
        with transaction(loopbot.engine) as session:
            write(session)
    except Exception:
        if router is not None:
            await router.swap(persona, *_route(current))
        raise


async def promote(loopbot, persona: str, version: int, *, reason: str = "manual", force: bool = False,
                  also: Write | None = None) -> Adapter:
    """Serve `version` of `persona` from now on: hot swap in this process's router, then the database; `also`
    writes what belongs with the promotion (a training run's outcome) in the same transaction."""
    engine = loopbot.engine
    loopbot.settings.persona(persona)
    open_store(loopbot.settings)  # the store's options apply to its URIs
    row = crud.get_adapter(engine, persona=persona, version=version)
    if row is None:
        raise UsageError(f"{persona} has no version {version} (see `loopbot adapters list --persona {persona}`)")
    if row.status == "active":
        raise UsageError(f"{row.name} is already active")
    if row.status in ("failed", "rolled_back") and not force:
        raise UsageError(f"{row.name} is {row.status} ({row.status_reason or 'no reason recorded'}); "
                         f"use --force to promote it anyway")
    _servable(row)
    current = crud.active_adapter(engine, persona=persona)

    def write(session: Session) -> None:
        crud.activate_adapter(session, persona=persona, version=version, reason=reason)
        crud.record_event(session, kind="promote", persona=persona, data={
            "version": version, "previous_version": current.version if current else None, "reason": reason})
        if also is not None:
            also(session)

    await _switch(loopbot, persona, row, current, write)
    log.info("promoted %s (was %s): %s", row.name, current.name if current else "the base model", reason)
    return crud.get_adapter(engine, persona=persona, version=version)


def rollback_target(engine, persona: str) -> tuple[Adapter, Adapter | None]:
    """(the live version, the version a rollback returns to: None = the base model); the one rollback policy."""
    current = crud.active_adapter(engine, persona=persona)
    if current is None:
        raise UsageError(f"{persona} serves the base model: nothing to roll back")
    version = crud.rollback_target(engine, persona=persona, version=current.version)
    return current, (crud.get_adapter(engine, persona=persona, version=version) if version is not None else None)


async def rollback(loopbot, persona: str, *, reason: str = "manual rollback", to_version: int | None = None,
                   to_base: bool = False, also: Write | None = None) -> Adapter | None:
    """Put `rollback_target` back (or `to_version`, or the base model); returns it. `also` writes what belongs
    with the rollback (the live watch's verdict) in the same transaction."""
    engine = loopbot.engine
    loopbot.settings.persona(persona)
    open_store(loopbot.settings)
    current, target = rollback_target(engine, persona)
    if to_base:
        target = None
    elif to_version is not None:
        target = crud.get_adapter(engine, persona=persona, version=to_version)
        if target is None:
            raise UsageError(f"{persona} has no version {to_version}")
        if target.version == current.version:
            raise UsageError(f"{target.name} is the active version")

    def write(session: Session) -> None:
        crud.activate_adapter(session, persona=persona, version=target.version if target else None,
                              previous_status="rolled_back", reason=reason)
        crud.record_event(session, kind="rollback", persona=persona, data={
            "from_version": current.version, "to_version": target.version if target else None, "reason": reason})
        if also is not None:
            also(session)

    await _switch(loopbot, persona, target, current, write)
    log.warning("rolled back %s to %s: %s", current.name, target.name if target else "the base model", reason)
    return target


def desired_routes(engine, personas) -> dict[str, tuple[str, str] | None]:
    """{persona: (served name, path) of the active version, or None for the base model}, from the database."""
    out: dict[str, tuple[str, str] | None] = {}
    for persona in personas:
        row = crud.active_adapter(engine, persona=persona)
        try:
            out[persona] = (row.name, _servable(row)) if row else None
        except LoopbotError as e:
            log.error("active adapter %s cannot be served: %s", row.name, e)
            out[persona] = None
    return out


async def reconcile_router(loopbot) -> dict | None:
    """Make this process's router serve what the database says is active (after a CLI promote or rollback)."""
    router = running_router(loopbot)
    if router is None:
        return None
    open_store(loopbot.settings)
    # the database and the store (a manifest request per published version) off the event loop: a bots process
    # reconciles every serving.reconcile_interval_s while it answers chats
    desired = await asyncio.to_thread(desired_routes, loopbot.engine, loopbot.settings.personas)
    return await router.reconcile(desired)


# ---- the live watch -------------------------------------------------------------------------------------------
def one_sided_two_proportion_p(likes_new: int, n_new: int, likes_old: int, n_old: int) -> float:
    """p-value of H1 "the new 👍 rate is lower than the old" (pooled z-test; normal approximation)."""
    if n_new == 0 or n_old == 0:
        return 1.0
    pooled = (likes_new + likes_old) / (n_new + n_old)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_new + 1 / n_old))
    diff = likes_new / n_new - likes_old / n_old
    if se == 0:
        return 0.0 if diff < 0 else 1.0
    z = diff / se
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


@dataclass
class WatchVerdict:
    persona: str
    version: int
    previous_version: int | None
    likes_new: int
    votes_new: int
    likes_old: int
    votes_old: int
    p_value: float | None
    decision: str  # "waiting" | "keep" | "rollback" | "no_baseline"

    def describe(self) -> str:
        def rate(k: int, n: int) -> str:
            return f"{k}/{n} = {k / n:.0%}" if n else "no votes"

        prev = f"v{self.previous_version}" if self.previous_version else "the base model"
        p = f", one-sided p = {self.p_value:.4f}" if self.p_value is not None else ""
        return f"live 👍 rate v{self.version} {rate(self.likes_new, self.votes_new)} vs {prev} " \
               f"{rate(self.likes_old, self.votes_old)}{p}: {self.decision}"


def watch_verdict(engine, settings, persona: str) -> WatchVerdict | None:
    """Where the live watch of the persona's active version stands (None: nothing to watch)."""
    gate = settings.trainer.gate
    current = crud.active_adapter(engine, persona=persona)
    if current is None or gate.watch_votes == 0 or (current.metrics.get("watch") or {}).get("decided"):
        return None
    prev = crud.rollback_target(engine, persona=persona, version=current.version)
    likes_new, n_new = crud.version_votes(engine, persona=persona, adapter_version=current.name,
                                          after=current.promoted_at, limit=gate.watch_votes)
    likes_old, n_old = crud.version_votes(engine, persona=persona,
                                          adapter_version=f"{persona}-v{prev}" if prev is not None else None,
                                          before=current.promoted_at)
    verdict = WatchVerdict(persona, current.version, prev, likes_new, n_new, likes_old, n_old, None, "waiting")
    if n_new < gate.watch_votes:
        return verdict
    if n_old == 0:
        verdict.decision = "no_baseline"
        return verdict
    verdict.p_value = round(one_sided_two_proportion_p(likes_new, n_new, likes_old, n_old), 6)
    verdict.decision = "rollback" if verdict.p_value < 1 - gate.watch_confidence else "keep"
    return verdict


def _record_watch(verdict: WatchVerdict) -> Write:
    """The verdict on the adapter (the watch is decided) and in the event log."""
    def write(session: Session) -> None:
        summary = {**asdict(verdict), "summary": verdict.describe()}
        crud.update_adapter_metrics(session, persona=verdict.persona, version=verdict.version,
                                    watch={**summary, "decided": True})
        crud.record_event(session, kind="watch", persona=verdict.persona, data=summary)

    return write


async def check_live_watch(loopbot, persona: str) -> WatchVerdict | None:
    """Decide the live watch once enough votes came in; roll back automatically when the new version is worse
    (the verdict and the rollback in one transaction)."""
    verdict = watch_verdict(loopbot.engine, loopbot.settings, persona)
    if verdict is None or verdict.decision == "waiting":
        return verdict
    if verdict.decision == "rollback":
        await rollback(loopbot, persona, reason=f"automatic rollback: {verdict.describe()}",
                       also=_record_watch(verdict))
    else:
        with transaction(loopbot.engine) as session:
            _record_watch(verdict)(session)
    return verdict


def adapter_summary(row: Adapter) -> dict:
    """What `loopbot adapters list/show` prints for one version."""
    gate = (row.metrics or {}).get("gate") or {}
    return {"name": row.name, "version": row.version, "status": row.status, "parent": row.parent_version,
            "created": row.created_at.isoformat(timespec="seconds") if row.created_at else None,
            "promoted": row.promoted_at.isoformat(timespec="seconds") if row.promoted_at else None,
            "reason": row.status_reason, "path": row.path, "remote_model_id": row.remote_model_id,
            "artifact": row.artifact_uri,
            "gate": "passed" if gate.get("passed") else (", ".join(gate.get("failed", [])) or None)}
