"""The training schedule inside `loopbot run`: a cron per persona plus a periodic check, in APScheduler 3.

Jobs live in the database (SQLAlchemyJobStore, table `apscheduler_jobs`, on the same URL as everything else), so a
nightly run missed while the process was down fires once at the next start (coalesce=True, within
MISFIRE_GRACE_S). max_instances=1 keeps a job from overlapping itself; the database run lock in
trainer.pipeline keeps two processes (or two schedulers) from training one persona at the same time.

The periodic check (every schedule.check_interval_s): converge the router to the database's active adapters
(a CLI promote/rollback in another process), decide live watches (automatic rollback), and start a cycle when
a persona has schedule.votes_trigger new feedback events (votes, plus the retried and followed-up replies that
train, weighted by trainer.implicit_trigger_weight).
"""

from __future__ import annotations

import logging

from loopbot.base.errors import ConfigError
from loopbot.trainer.dataset_stats import describe_new_feedback, new_feedback_since_last_run
from loopbot.trainer.jobs import queue_enabled
from loopbot.trainer.pipeline import cycle_requested, cycle_running, request_cycle, run_cycle
from loopbot.trainer.registry import check_live_watch, reconcile_router

log = logging.getLogger(__name__)
MISFIRE_GRACE_S = 6 * 3600
CHECK_JOB_ID = "training-check"
_loopbot = None  # one Loopbot per process (set by start_scheduler); jobs in the store hold only text references


def cycle_job_id(persona: str) -> str:
    return f"training-cycle:{persona}"


def _cron(settings):
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger.from_crontab(settings.schedule.cron, timezone=settings.schedule.timezone)
    except ValueError as e:
        raise ConfigError(f"schedule.cron = {settings.schedule.cron!r}: {e}") from None


def start_scheduler(loopbot):
    """Start (inside a running event loop) and return the AsyncIOScheduler with this process's training jobs."""
    global _loopbot
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    settings = loopbot.settings
    _loopbot = loopbot
    trigger = _cron(settings)
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=loopbot.engine)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S},
        timezone=settings.schedule.timezone)
    scheduler.start()
    wanted = {cycle_job_id(p) for p in settings.personas}
    for job in scheduler.get_jobs():
        if job.id.startswith("training-cycle:") and job.id not in wanted:
            job.remove()
    for persona in settings.personas:
        existing = scheduler.get_job(cycle_job_id(persona))
        if existing is not None and str(existing.trigger) == str(trigger):
            continue  # keep its stored next run time: a run missed while we were down still happens
        scheduler.add_job("loopbot.trainer.schedule:scheduled_cycle", trigger, args=[persona], id=cycle_job_id(persona),
                          name=f"nightly training of {persona}", replace_existing=True)
    scheduler.add_job("loopbot.trainer.schedule:periodic_check", "interval", seconds=settings.schedule.check_interval_s,
                      id=CHECK_JOB_ID, name="training check", replace_existing=True)
    log.info("training schedule: %s (%s) for %s; check every %.0f s", settings.schedule.cron,
             settings.schedule.timezone, ", ".join(settings.personas), settings.schedule.check_interval_s)
    return scheduler


async def scheduled_cycle(persona: str):
    """The cron job: one cycle of `persona` (skipped with a reason when there is too little new data); with the
    training queue on, the cycle is queued (one waiting per persona) and the message says so."""
    if _loopbot is None or persona not in _loopbot.settings.personas:
        log.warning("scheduled cycle of %r ignored: no such persona in this process", persona)
        return None
    if queue_enabled(_loopbot.settings):  # a `loopbot worker` runs it
        return request_cycle(_loopbot, persona, trigger="cron", force=False)
    return await run_cycle(_loopbot, persona, trigger="cron")


async def periodic_check() -> dict:
    """Reconcile the router, decide live watches, and start vote-triggered cycles; returns what it did."""
    if _loopbot is None:
        return {}
    return await check_once(_loopbot)


async def check_once(loopbot) -> dict:
    done: dict = {"watch": {}, "started": []}
    try:
        done["routes"] = await reconcile_router(loopbot)
    except Exception as e:
        log.error("router reconcile failed: %s", e)
    threshold = loopbot.settings.schedule.votes_trigger
    for persona in loopbot.settings.personas:
        try:
            verdict = await check_live_watch(loopbot, persona)
            if verdict is not None:
                done["watch"][persona] = verdict.decision
        except Exception as e:
            log.error("live watch of %s failed: %s", persona, e)
        if threshold and not cycle_requested(persona) and not cycle_running(loopbot.engine, persona):
            new = new_feedback_since_last_run(loopbot.engine, persona, loopbot.settings)
            if new["total"] >= threshold:
                log.info("%s has %s (trigger %d): starting a training cycle", persona, describe_new_feedback(new),
                         threshold)
                request_cycle(loopbot, persona, trigger="votes", force=False)
                done["started"].append(persona)
    return done
