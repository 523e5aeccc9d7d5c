"""The training job queue: procrastinate on the deployment's PostgreSQL (its tables sit beside alembic's).

`trainer.queue` ("auto" = on when storage.url is PostgreSQL) decides whether a requested cycle is queued here for a
`loopbot worker` (trainer.job_worker) or run in the asking process. One task, TASK_NAME, on the QUEUE queue; each
job carries `lock` and `queueing_lock` = persona_lock(persona): at most one job of a persona waits in the queue and
at most one runs, on top of the database run lock the cycle itself takes (trainer.pipeline.run_cycle).

The enqueue, list and retry calls here are synchronous (a short-lived pool of one connection): the CLI and the
bots' /train call them a few times a day. The worker side is async (trainer.job_worker).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from procrastinate import App, PsycopgConnector, SyncPsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued, UniqueViolation
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url

from loopbot.base.errors import ConfigError, UsageError
from loopbot.base.settings import Settings

log = logging.getLogger(__name__)
QUEUE = "training"
TASK_NAME = "loopbot.training_cycle"
_SCHEMA_LOCK = 0x6C6F6F70  # pg_advisory_lock key while applying procrastinate's schema ("loop")


class AlreadyQueued(UsageError):
    """A cycle of the persona is already waiting in the queue."""


@dataclass
class JobRow:
    id: int
    persona: str
    trigger: str
    status: str
    attempts: int
    scheduled_at: object = None


def is_postgres(settings: Settings) -> bool:
    return make_url(settings.database_url).get_backend_name() == "postgresql"


def queue_enabled(settings: Settings) -> bool:
    """Whether cycles go on the queue: trainer.queue = postgres, or auto on a PostgreSQL storage.url."""
    mode = settings.trainer.queue
    if mode == "off":
        return False
    if mode == "postgres" and not is_postgres(settings):
        raise ConfigError("trainer.queue = postgres needs storage.url on PostgreSQL (the queue lives in it); "
                          "use auto or off with SQLite")
    return is_postgres(settings)


def conninfo(database_url: str) -> str:
    """SQLAlchemy's `postgresql+psycopg://user:pw@host:port/db?opt=v` as a libpq conninfo string."""
    from psycopg.conninfo import make_conninfo

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"the training queue needs PostgreSQL, not {url.get_backend_name()}")
    parts = {"host": url.host, "port": url.port, "dbname": url.database, "user": url.username,
             "password": url.password}
    parts.update({k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()})
    return make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})


def persona_lock(persona: str) -> str:
    return f"training-cycle:{persona}"


def make_app(settings: Settings, *, sync: bool = False) -> App:
    """A procrastinate App on the settings' database (not opened). The worker registers the task on its own."""
    info = conninfo(settings.database_url)
    if sync:
        return App(connector=SyncPsycopgConnector(conninfo=info, min_size=1, max_size=1))
    return App(connector=PsycopgConnector(conninfo=info, min_size=1, max_size=4))


def ensure_schema(settings: Settings) -> bool:
    """Apply procrastinate's schema when its tables are missing (under an advisory lock: one process applies it);
    True if it was applied now. Idempotent, called by every worker start and enqueue."""
    import psycopg

    with psycopg.connect(conninfo(settings.database_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is not None:
                return False
            conn.execute(SchemaManager.get_schema())
            log.info("applied procrastinate's schema (the training job queue) to the database")
            return True
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


_schema_checked: set[str] = set()


@contextlib.contextmanager
def open_sync_app(settings: Settings) -> Iterator[App]:
    """The App opened synchronously on one connection, with the schema in place; closed on exit."""
    if settings.database_url not in _schema_checked:
        ensure_schema(settings)
        _schema_checked.add(settings.database_url)
    app = make_app(settings, sync=True)
    app.open()
    try:
        yield app
    finally:
        app.close()


def enqueue_cycle(settings: Settings, persona: str, *, trigger: str = "manual", force: bool = False,
                  method: str | None = None) -> int:
    """Queue one cycle of `persona`; its job id. AlreadyQueued when one of that persona is already waiting."""
    settings.persona(persona)
    if not queue_enabled(settings):
        raise UsageError("the training queue is off (trainer.queue, and storage.url is not PostgreSQL)")
    with open_sync_app(settings) as app:
        try:
            return app.configure_task(name=TASK_NAME, queue=QUEUE, lock=persona_lock(persona),
                                      queueing_lock=persona_lock(persona)).defer(
                persona=persona, trigger=trigger, force=force, method=method)
        except AlreadyEnqueued:
            raise AlreadyQueued(f"a training cycle of {persona} is already queued") from None


def list_jobs(settings: Settings, *, limit: int = 20, status: str | None = None) -> list[JobRow]:
    """The newest training jobs, newest first."""
    with open_sync_app(settings) as app:
        rows = app.job_manager.list_jobs(task=TASK_NAME, status=status)
    rows = sorted(rows, key=lambda j: j.id or 0, reverse=True)[:limit]
    return [JobRow(j.id, j.task_kwargs.get("persona", "?"), j.task_kwargs.get("trigger", "?"), j.status or "?",
                   j.attempts, j.scheduled_at) for j in rows]


def retry_job(settings: Settings, job_id: int) -> int:
    """Put failed job `job_id` back in the queue (its id); an aborted or cancelled one is queued again as a new job
    with the same arguments (the new id). UsageError for a job that is waiting, running or succeeded."""
    from procrastinate import utils

    with open_sync_app(settings) as app:
        found = app.job_manager.list_jobs(id=job_id, task=TASK_NAME)
        if not found:
            raise UsageError(f"no training job {job_id}")
        job = found[0]
        persona = job.task_kwargs.get("persona", "")
        try:
            if job.status == "failed":
                app.job_manager.retry_job_by_id(job_id, retry_at=utils.utcnow())
                return job_id
            if job.status in ("aborted", "cancelled"):
                return app.configure_task(name=TASK_NAME, queue=QUEUE, lock=persona_lock(persona),
                                          queueing_lock=persona_lock(persona)).defer(**job.task_kwargs)
        except (AlreadyEnqueued, UniqueViolation):  # the retried job would be a 2nd waiting one of the persona
            raise AlreadyQueued(f"a training cycle of {persona} is already queued") from None
        raise UsageError(f"training job {job_id} is {job.status}: only a failed, aborted or cancelled job is retried")
