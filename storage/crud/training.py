"""Training runs and the per-persona run lock (a database row, so it holds across processes and machines)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from loopbot.storage.db import DB, session_scope, transaction
from loopbot.storage.models import Adapter, RunLock, TrainingRun, utcnow

__all__ = [
    "acquire_run_lock",
    "add_run_step",
    "fail_runs_of_job",
    "fail_stale_runs",
    "finish_training_run",
    "get_training_run",
    "highest_trained_feedback_id",
    "highest_trained_id",
    "list_training_runs",
    "release_run_lock",
    "release_run_lock_of_job",
    "renew_run_lock",
    "run_lock_held",
    "start_training_run",
    "touch_training_run",
]


def start_training_run(db: DB, *, persona: str, trigger: str = "manual", method: str = "") -> TrainingRun:
    with transaction(db) as s:
        run = TrainingRun(persona=persona, trigger=trigger, method=method, heartbeat_at=utcnow())
        s.add(run)
        s.flush()
        s.refresh(run)
        return run


def add_run_step(db: DB, *, run_id: int, step: str, outcome: str, **details) -> None:
    """Append one step's outcome (build, train, eval, gate, promote) to the run's log."""
    with transaction(db) as s:
        run = _run(s, run_id)
        run.steps = [*run.steps, {"step": step, "outcome": outcome, "at": utcnow().isoformat(), **details}]
        run.heartbeat_at = utcnow()


def touch_training_run(db: DB, *, run_id: int) -> None:
    """The run's heartbeat: it is still alive."""
    with transaction(db) as s:
        s.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(heartbeat_at=utcnow()))


def finish_training_run(db: DB, *, run_id: int, status: str, error: str | None = None,
                        metrics: dict | None = None, dataset_sizes: dict | None = None,
                        candidate_version: int | None = None) -> TrainingRun:
    with transaction(db) as s:
        run = _run(s, run_id)
        run.status, run.error, run.finished_at = status, error, utcnow()
        if metrics is not None:
            run.metrics = metrics
        if dataset_sizes is not None:
            run.dataset_sizes = dataset_sizes
        if candidate_version is not None:
            run.candidate_version = candidate_version
        s.flush()
        s.refresh(run)
        return run


def _run(s, run_id: int) -> TrainingRun:
    run = s.get(TrainingRun, run_id)
    if run is None:
        raise LookupError(f"training run {run_id} does not exist")
    return run


def get_training_run(db: DB, *, run_id: int) -> TrainingRun | None:
    with transaction(db) as s:
        return s.get(TrainingRun, run_id)


def list_training_runs(db: DB, *, persona: str | None = None, limit: int = 20) -> list[TrainingRun]:
    with transaction(db) as s:
        q = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
        if persona:
            q = q.where(TrainingRun.persona == persona)
        return list(s.execute(q).scalars())


def highest_trained_feedback_id(db: DB, *, persona: str, run_statuses: tuple[str, ...]) -> int:
    """The highest `feedback_id_max` in the persona's adapters' dataset manifests and in the dataset sizes of its
    runs with one of `run_statuses` (0 if none)."""
    return highest_trained_id(db, persona=persona, run_statuses=run_statuses, key="feedback_id_max")


def highest_trained_id(db: DB, *, persona: str, run_statuses: tuple[str, ...], key: str) -> int:
    """The highest `key` (e.g. "feedback_id_max", "generation_id_max") in the persona's adapters' dataset
    manifests and in the dataset sizes of its runs with one of `run_statuses` (0 if none)."""
    best = 0
    with transaction(db) as s:
        for (manifest,) in s.execute(select(Adapter.dataset_manifest).where(Adapter.persona == persona)):
            best = max(best, int((manifest or {}).get(key) or 0))
        for (sizes,) in s.execute(select(TrainingRun.dataset_sizes).where(
                TrainingRun.persona == persona, TrainingRun.status.in_(run_statuses))):
            best = max(best, int((sizes or {}).get(key) or 0))
    return best


def acquire_run_lock(engine: Engine, *, persona: str, holder: str, ttl_s: float = 3600) -> bool:
    """Take the persona's lock unless a live holder has it; an expired lock is taken over."""
    now = utcnow()
    with session_scope(engine) as s:
        s.execute(delete(RunLock).where(RunLock.persona == persona, RunLock.expires_at < now))
    try:
        with session_scope(engine) as s:
            s.add(RunLock(persona=persona, holder=holder, acquired_at=now, expires_at=now + timedelta(seconds=ttl_s)))
        return True
    except IntegrityError:
        return False


def renew_run_lock(db: DB, *, persona: str, holder: str, ttl_s: float = 3600) -> bool:
    with transaction(db) as s:
        return s.execute(update(RunLock).where(RunLock.persona == persona, RunLock.holder == holder)
                         .values(expires_at=utcnow() + timedelta(seconds=ttl_s))).rowcount > 0


def release_run_lock(db: DB, *, persona: str, holder: str) -> None:
    with transaction(db) as s:
        s.execute(delete(RunLock).where(RunLock.persona == persona, RunLock.holder == holder))


def run_lock_held(db: DB, *, persona: str) -> bool:
    """Whether a holder has the persona's lock and it has not expired."""
    with transaction(db) as s:
        lock = s.get(RunLock, persona)
        if lock is None:
            return False
        expires = lock.expires_at if lock.expires_at.tzinfo else lock.expires_at.replace(tzinfo=utcnow().tzinfo)
        return expires > utcnow()


def fail_stale_runs(db: DB, *, persona: str | None = None, older_than_s: float = 3600) -> int:
    """Mark `running` runs whose heartbeat stopped (a killed trainer) as failed."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with transaction(db) as s:
        q = update(TrainingRun).where(TrainingRun.status == "running", TrainingRun.heartbeat_at < cutoff)
        if persona:
            q = q.where(TrainingRun.persona == persona)
        return s.execute(q.values(status="failed", error="trainer stopped responding",
                                  finished_at=utcnow())).rowcount


def fail_runs_of_job(db: DB, *, persona: str, job_id: int, error: str) -> list[int]:
    """Mark the persona's `running` runs started by queue job `job_id` (their "job" step) as failed; their ids."""
    failed = []
    with transaction(db) as s:
        for run in s.execute(select(TrainingRun).where(TrainingRun.persona == persona,
                                                        TrainingRun.status == "running")).scalars():
            if any(step.get("step") == "job" and step.get("job_id") == job_id for step in run.steps):
                run.steps = [*run.steps, {"step": "cycle", "outcome": "failed", "at": utcnow().isoformat(),
                                          "error": error}]
                run.status, run.error, run.finished_at = "failed", error, utcnow()
                failed.append(run.id)
    return failed


def release_run_lock_of_job(db: DB, *, persona: str, job_id: int) -> bool:
    """Release the persona's run lock if the cycle of queue job `job_id` holds it (its holder ends ":job<id>")."""
    with transaction(db) as s:
        return s.execute(delete(RunLock).where(RunLock.persona == persona,
                                               RunLock.holder.like(f"%:job{int(job_id)}"))).rowcount > 0
