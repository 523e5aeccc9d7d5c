"""Jobs of dead workers: a training job left `doing` by a worker that stopped sending heartbeats (killed, its host
lost) is found with procrastinate's stalled-job query; its TrainingRun is failed, the persona's run lock its cycle
held is released, and the job goes back in the queue (up to MAX_ATTEMPTS tries; after that it ends `failed` and
`loopbot jobs retry ID` puts it back). Every `loopbot worker` runs this at start and every RECOVER_EVERY_S.
"""

from __future__ import annotations

import asyncio
import logging

from procrastinate import App, utils
from procrastinate.exceptions import ConnectorException, UniqueViolation
from procrastinate.jobs import Status

from loopbot.storage import crud
from loopbot.trainer.jobs import QUEUE, TASK_NAME

log = logging.getLogger(__name__)
# procrastinate's workers beat every 10 s; a worker silent this long is dead. A live worker's beat is on its
# event loop, which the cycle never blocks (its heavy steps run in threads or a subprocess).
STALLED_AFTER_S = 120.0
RECOVER_EVERY_S = 60.0
MAX_ATTEMPTS = 3


async def recover_stalled_jobs(app: App, engine, *, stalled_after_s: float = STALLED_AFTER_S,
                               max_attempts: int = MAX_ATTEMPTS) -> list[dict]:
    """Fail the runs of stalled training jobs, release their run locks, retry or fail the jobs; what was done."""
    done = []
    stalled = await app.job_manager.get_stalled_jobs(queue=QUEUE, task_name=TASK_NAME,
                                                     seconds_since_heartbeat=stalled_after_s)
    for job in stalled:
        persona = str(job.task_kwargs.get("persona", ""))
        why = (f"worker {job.worker_id if job.worker_id is not None else '(pruned)'} stopped mid-job {job.id} "
               f"(no heartbeat for {stalled_after_s:.0f} s)")
        runs = await asyncio.to_thread(crud.fail_runs_of_job, engine, persona=persona, job_id=job.id, error=why)
        released = await asyncio.to_thread(crud.release_run_lock_of_job, engine, persona=persona, job_id=job.id)
        attempt = job.attempts + 1  # this try counts
        action = "retried" if attempt < max_attempts else "failed"
        try:
            if action == "retried":
                await app.job_manager.retry_job_by_id_async(job.id, retry_at=utils.utcnow())
            else:
                await app.job_manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
        except UniqueViolation:  # back in the queue it would be a second waiting cycle of the persona
            await app.job_manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
            action = "failed (another cycle of the persona is already queued)"
        except ConnectorException as e:  # another worker recovered it first
            action = f"left as it is ({type(e).__name__}: {e})"
        log.warning("training job %s of %s: %s; failed runs %s, run lock %s; job %s", job.id, persona, why, runs,
                    "released" if released else "not held", action)
        done.append({"job_id": job.id, "persona": persona, "runs": runs, "lock_released": released,
                     "action": action, "attempt": attempt})
    return done
