"""The worker side of the training queue: the `training_cycle` task and `run_worker`, which `loopbot worker` runs
(and `loopbot run` can run in-process when the queue is on: `await run_worker(loopbot, stop_event)`).

The task runs trainer.pipeline.run_cycle with the worker's own Loopbot (its engine, settings and router: a promotion
hot-swaps into this process's router; serving processes converge to the database's active adapter in their periodic
check). A cycle that ends `failed` fails the job, so `loopbot jobs retry ID` can run it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from procrastinate import App, JobContext

from loopbot.trainer import pipeline
from loopbot.trainer.job_recovery import RECOVER_EVERY_S, STALLED_AFTER_S, recover_stalled_jobs
from loopbot.trainer.jobs import QUEUE, TASK_NAME, ensure_schema, make_app

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 30.0  # on SIGINT/SIGTERM a running cycle gets this long, then it is cancelled (run: failed)


class CycleFailed(RuntimeError):
    """The cycle ran and ended `failed` (the TrainingRun has the reason)."""


async def training_cycle(context: JobContext, persona: str, trigger: str = "manual", force: bool = False,
                         method: str | None = None) -> None:
    loopbot = context.additional_context["loopbot"]
    job = {"job_id": context.job.id, "worker_id": context.job.worker_id}
    result = await pipeline.run_cycle(loopbot, persona, trigger=trigger, force=force, method=method, job=job)
    if result is None:
        log.info("training job %s: a cycle of %s holds the run lock elsewhere; nothing to do", job["job_id"], persona)
        return
    log.info("training job %s: run %d of %s %s %s", job["job_id"], result.run_id, persona, result.status,
             result.reason)
    if result.status == "failed":
        raise CycleFailed(f"training run {result.run_id} of {persona} failed: {result.reason}")


def worker_app(loopbot) -> App:
    """An App with the training task registered (not opened)."""
    app = make_app(loopbot.settings)
    app.task(name=TASK_NAME, queue=QUEUE, pass_context=True)(training_cycle)
    return app


async def run_worker(loopbot, stop: asyncio.Event, *, concurrency: int = 1, once: bool = False,
                     stalled_after_s: float = STALLED_AFTER_S) -> None:
    """Take training jobs until `stop` is set (or, with `once`, until the queue has none left to start).

    Applies procrastinate's schema if missing, recovers the jobs of dead workers at start and every
    RECOVER_EVERY_S, and installs no signal handlers (the caller owns them and sets `stop`)."""
    await asyncio.to_thread(ensure_schema, loopbot.settings)
    app = worker_app(loopbot)
    async with app.open_async():
        await recover_stalled_jobs(app, loopbot.engine, stalled_after_s=stalled_after_s)
        work = asyncio.create_task(app.run_worker_async(
            queues=[QUEUE], concurrency=concurrency, wait=not once, install_signal_handlers=False,
            name=f"loopbot-worker-{socket.gethostname()}-{os.getpid()}", shutdown_graceful_timeout=SHUTDOWN_GRACE_S,
            additional_context={"loopbot": loopbot}), name="training-worker")
        sweeper = asyncio.create_task(_sweep(app, loopbot.engine, stalled_after_s), name="training-job-recovery")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sweeper, stopper):
                task.cancel()
            if not work.done():
                work.cancel()  # procrastinate stops gracefully: running jobs get SHUTDOWN_GRACE_S
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if work.done() and not work.cancelled():
            work.result()


async def _sweep(app: App, engine, stalled_after_s: float) -> None:
    while True:
        await asyncio.sleep(RECOVER_EVERY_S)
        try:
            await recover_stalled_jobs(app, engine, stalled_after_s=stalled_after_s)
        except Exception as e:  # the database may be away for a moment; try again next time
            log.error("recovering stalled training jobs failed: %s", e)
