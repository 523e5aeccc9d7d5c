"""`loopbot worker`: take training jobs off the queue (trainer.queue on PostgreSQL), and `loopbot jobs`: see them,
retry them. Any number of workers, on any host that reaches the database, share the queue."""

from __future__ import annotations

import asyncio
import signal

import typer

from loopbot.base.errors import UsageError
from loopbot.commands.context import app_from, settings_from
from loopbot.trainer import jobs
from loopbot.trainer.job_recovery import STALLED_AFTER_S

jobs_app = typer.Typer(no_args_is_help=True, help="the training job queue: list jobs, retry one")
QUEUE_OFF = ("the training queue is off: trainer.queue = off, or storage.url is SQLite (cycles then run in the "
             "process that asks for them: `loopbot train`, `loopbot run`)")


def _require_queue(settings) -> None:
    if not jobs.queue_enabled(settings):
        raise UsageError(QUEUE_OFF)


def worker(ctx: typer.Context,
           concurrency: int = typer.Option(1, "--concurrency", min=1, help="cycles run at once (of different "
                                                                           "personas)"),
           once: bool = typer.Option(False, "--once", help="run the jobs waiting now, then exit"),
           stalled_after: float = typer.Option(STALLED_AFTER_S, "--stalled-after", min=1, help="seconds without "
                                               "a heartbeat after which another worker's running job is failed "
                                               "and retried")) -> None:
    """Run training jobs from the queue until SIGINT/SIGTERM (a running cycle gets 30 s to finish)."""
    from loopbot.trainer.job_worker import run_worker

    loopbot = app_from(ctx)
    _require_queue(loopbot.settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(loopbot, stop, concurrency=concurrency, once=once, stalled_after_s=stalled_after)

    try:
        asyncio.run(main())
    finally:
        loopbot.engine.dispose()


@jobs_app.command("list")
def list_(ctx: typer.Context, limit: int = typer.Option(20, "--limit"),
          status: str | None = typer.Option(None, "--status", help="todo | doing | succeeded | failed | aborted")
          ) -> None:
    """Recent training jobs: id, persona, trigger, status, attempts."""
    settings = settings_from(ctx)
    _require_queue(settings)
    rows = jobs.list_jobs(settings, limit=limit, status=status)
    if not rows:
        typer.echo("no training jobs")
    for r in rows:
        typer.echo(f"job {r.id}  {r.persona:<16} {r.trigger:<8} {r.status:<10} attempts {r.attempts}")


@jobs_app.command("retry")
def retry(ctx: typer.Context, job_id: int = typer.Argument(..., help="the job id (`loopbot jobs list`)")) -> None:
    """Put a failed training job back in the queue (an aborted one is queued again as a new job)."""
    settings = settings_from(ctx)
    _require_queue(settings)
    new_id = jobs.retry_job(settings, job_id)
    typer.echo(f"job {job_id} queued again" if new_id == job_id else f"job {job_id} queued again as job {new_id}")


@jobs_app.command("recover")
def recover(ctx: typer.Context,
            stalled_after: float = typer.Option(STALLED_AFTER_S, "--stalled-after", min=1, help="seconds without a "
                                                "heartbeat after which a running job's worker counts as dead")) -> None:
    """Now, without waiting for a worker to do it: fail the runs of jobs whose worker died, release their run locks
    and put the jobs back in the queue (or end them failed after their last try)."""
    import asyncio

    from loopbot.trainer.job_recovery import recover_stalled_jobs
    from loopbot.trainer.job_worker import worker_app
    from loopbot.trainer.jobs import ensure_schema

    loopbot = app_from(ctx)
    _require_queue(loopbot.settings)

    async def main() -> list[dict]:
        await asyncio.to_thread(ensure_schema, loopbot.settings)
        app = worker_app(loopbot)
        async with app.open_async():
            return await recover_stalled_jobs(app, loopbot.engine, stalled_after_s=stalled_after)

    done = asyncio.run(main())
    if not done:
        typer.echo("no stalled training jobs")
    for item in done:
        typer.echo(", ".join(f"{k} {v}" for k, v in item.items()))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.add_typer(jobs_app, name="jobs")
