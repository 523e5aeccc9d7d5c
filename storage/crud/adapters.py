"""The adapter registry: versions, status, and exactly one active version per persona."""

from __future__ import annotations

from sqlalchemy import func, select, update

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import Adapter, Event, utcnow

__all__ = [
    "ADAPTER_STATUSES",
    "activate_adapter",
    "active_adapter",
    "active_adapter_names",
    "create_adapter",
    "get_adapter",
    "list_adapters",
    "next_adapter_version",
    "rollback_target",
    "set_adapter_status",
    "update_adapter_metrics",
]

ADAPTER_STATUSES = ("candidate", "active", "retired", "failed", "rolled_back")


def next_adapter_version(db: DB, *, persona: str) -> int:
    with transaction(db) as s:
        return (s.execute(select(func.max(Adapter.version)).where(Adapter.persona == persona)).scalar() or 0) + 1


def create_adapter(db: DB, *, persona: str, version: int, base_model: str, path: str = "",
                   parent_version: int | None = None, status: str = "candidate", metrics: dict | None = None,
                   dataset_manifest: dict | None = None, training_run_id: int | None = None,
                   remote_model_id: str | None = None, artifact_uri: str | None = None,
                   artifact_sha256: str | None = None) -> Adapter:
    with transaction(db) as s:
        row = Adapter(persona=persona, version=version, name=f"{persona}-v{version}", base_model=base_model,
                      path=path, parent_version=parent_version, status=status, metrics=metrics or {},
                      dataset_manifest=dataset_manifest or {}, training_run_id=training_run_id,
                      remote_model_id=remote_model_id, artifact_uri=artifact_uri,
                      artifact_sha256=artifact_sha256)
        s.add(row)
        s.flush()
        s.refresh(row)
        return row


def get_adapter(db: DB, *, persona: str, version: int) -> Adapter | None:
    with transaction(db) as s:
        return s.execute(select(Adapter).where(Adapter.persona == persona,
                                               Adapter.version == version)).scalar_one_or_none()


def active_adapter(db: DB, *, persona: str) -> Adapter | None:
    with transaction(db) as s:
        return s.execute(select(Adapter).where(Adapter.persona == persona,
                                               Adapter.status == "active")).scalar_one_or_none()


def active_adapter_names(db: DB) -> list[str]:
    """The served names of every persona's active version."""
    with transaction(db) as s:
        return list(s.execute(select(Adapter.name).where(Adapter.status == "active")).scalars())


def list_adapters(db: DB, *, persona: str | None = None) -> list[Adapter]:
    with transaction(db) as s:
        q = select(Adapter).order_by(Adapter.persona, Adapter.version)
        if persona:
            q = q.where(Adapter.persona == persona)
        return list(s.execute(q).scalars())


def set_adapter_status(db: DB, *, persona: str, version: int, status: str, reason: str | None = None,
                       metrics: dict | None = None) -> None:
    if status not in ADAPTER_STATUSES:
        raise ValueError(f"status is one of {ADAPTER_STATUSES}, got {status!r}")
    if status == "active":
        raise ValueError("use activate_adapter to make a version active")
    with transaction(db) as s:
        values: dict = {"status": status, "status_reason": reason}
        if metrics is not None:
            values["metrics"] = metrics
        s.execute(update(Adapter).where(Adapter.persona == persona, Adapter.version == version).values(**values))


def update_adapter_metrics(db: DB, *, persona: str, version: int, **entries) -> None:
    """Add or replace these entries of the version's metrics; the other entries stay."""
    with transaction(db) as s:
        row = s.execute(select(Adapter).where(Adapter.persona == persona,
                                              Adapter.version == version)).scalar_one_or_none()
        if row is None:
            raise LookupError(f"{persona} has no version {version}")
        row.metrics = {**row.metrics, **entries}


def activate_adapter(db: DB, *, persona: str, version: int | None, previous_status: str = "retired",
                     reason: str | None = None) -> None:
    """Make `version` the only active one (None = serve the base model), in one transaction."""
    with transaction(db) as s:
        s.execute(update(Adapter).where(Adapter.persona == persona, Adapter.status == "active")
                  .values(status=previous_status, status_reason=reason))
        if version is not None:
            done = s.execute(update(Adapter).where(Adapter.persona == persona, Adapter.version == version)
                             .values(status="active", promoted_at=utcnow(), status_reason=reason)).rowcount
            if not done:
                raise LookupError(f"{persona} has no version {version}")
        s.add(Event(kind="activate", persona=persona, data={"version": version, "reason": reason}))


def rollback_target(db: DB, *, persona: str, version: int) -> int | None:
    """The version a rollback of `version` returns to (None = the base model): the newest one served before it, by
    the activation log, that may serve again (not failed or rolled back); the base model if that was served before
    it, or if no earlier version may serve."""
    with transaction(db) as s:
        usable = set(s.execute(select(Adapter.version).where(
            Adapter.persona == persona, Adapter.version != version,
            Adapter.status.not_in(("active", "failed", "rolled_back")))).scalars())
        served = s.execute(select(Event.data).where(Event.kind == "activate", Event.persona == persona)
                           .order_by(Event.id.desc())).scalars()
        before = False  # past the newest activation of `version`
        for data in served:
            earlier = (data or {}).get("version")
            if not before:
                before = earlier == version
            elif earlier is None or earlier in usable:
                return earlier
    return None
