"""The adapter registry: versions, status, and exactly one active version per persona."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from loopbot.storage.db import session_scope
from loopbot.storage.models import Adapter, Event, utcnow

__all__ = [
    "next_adapter_version", "create_adapter", "get_adapter", "active_adapter", "list_adapters",
    "set_adapter_status", "activate_adapter", "ADAPTER_STATUSES",
]

ADAPTER_STATUSES = ("candidate", "active", "retired", "failed", "rolled_back")


def next_adapter_version(engine: Engine, *, persona: str) -> int:
    with session_scope(engine) as s:
        return (s.execute(select(func.max(Adapter.version)).where(Adapter.persona == persona)).scalar() or 0) + 1


def create_adapter(engine: Engine, *, persona: str, version: int, base_model: str, path: str = "",
                   parent_version: int | None = None, status: str = "candidate", metrics: dict | None = None,
                   dataset_manifest: dict | None = None, training_run_id: int | None = None,
                   remote_model_id: str | None = None) -> Adapter:
    with session_scope(engine) as s:
        row = Adapter(persona=persona, version=version, name=f"{persona}-v{version}", base_model=base_model,
                      path=path, parent_version=parent_version, status=status, metrics=metrics or {},
                      dataset_manifest=dataset_manifest or {}, training_run_id=training_run_id,
                      remote_model_id=remote_model_id)
        s.add(row)
        s.flush()
        s.refresh(row)
        return row


def get_adapter(engine: Engine, *, persona: str, version: int) -> Adapter | None:
    with session_scope(engine) as s:
        return s.execute(select(Adapter).where(Adapter.persona == persona,
                                               Adapter.version == version)).scalar_one_or_none()


def active_adapter(engine: Engine, *, persona: str) -> Adapter | None:
    with session_scope(engine) as s:
        return s.execute(select(Adapter).where(Adapter.persona == persona,
                                               Adapter.status == "active")).scalar_one_or_none()


def list_adapters(engine: Engine, *, persona: str | None = None) -> list[Adapter]:
    with session_scope(engine) as s:
        q = select(Adapter).order_by(Adapter.persona, Adapter.version)
        if persona:
            q = q.where(Adapter.persona == persona)
        return list(s.execute(q).scalars())


def set_adapter_status(engine: Engine, *, persona: str, version: int, status: str, reason: str | None = None,
                       metrics: dict | None = None) -> None:
    if status not in ADAPTER_STATUSES:
        raise ValueError(f"status is one of {ADAPTER_STATUSES}, got {status!r}")
    if status == "active":
        raise ValueError("use activate_adapter to make a version active")
    with session_scope(engine) as s:
        values: dict = {"status": status, "status_reason": reason}
        if metrics is not None:
            values["metrics"] = metrics
        s.execute(update(Adapter).where(Adapter.persona == persona, Adapter.version == version).values(**values))


def activate_adapter(engine: Engine, *, persona: str, version: int | None, previous_status: str = "retired",
                     reason: str | None = None) -> None:
    """Make `version` the only active one (None = serve the base model), in one transaction."""
    with session_scope(engine) as s:
        s.execute(update(Adapter).where(Adapter.persona == persona, Adapter.status == "active")
                  .values(status=previous_status, status_reason=reason))
        if version is not None:
            done = s.execute(update(Adapter).where(Adapter.persona == persona, Adapter.version == version)
                             .values(status="active", promoted_at=utcnow(), status_reason=reason)).rowcount
            if not done:
                raise LookupError(f"{persona} has no version {version}")
        s.add(Event(kind="activate", persona=persona, data={"version": version, "reason": reason}))
