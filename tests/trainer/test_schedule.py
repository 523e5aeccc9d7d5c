"""The schedule: jobs stored in the database survive a restart, votes trigger a cycle, the router converges."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from loopbot.app import Loopbot
from loopbot.base.errors import ConfigError
from loopbot.serving.router import Router
from loopbot.storage import crud
from loopbot.trainer.pipeline import pending_cycle
from loopbot.trainer.registry import promote
from loopbot.trainer.schedule import CHECK_JOB_ID, check_once, cycle_job_id, start_scheduler
from testkit.instant_backend import InstantBackend
from tests.trainer.synthetic import seed_feedback


async def _wait_for(predicate, timeout_s: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("timed out")
        await asyncio.sleep(0.1)


async def test_a_nightly_run_missed_while_down_runs_once_after_a_restart(loopbot):
    first = start_scheduler(loopbot)
    try:
        ids = {job.id for job in first.get_jobs()}
        assert ids == {CHECK_JOB_ID, *(cycle_job_id(p) for p in loopbot.settings.personas)}
        nightly = first.get_job(cycle_job_id("coach"))
        assert (nightly.next_run_time.hour, nightly.next_run_time.minute) == (3, 0)
        assert nightly.coalesce and nightly.max_instances == 1
        first.pause()
        missed = datetime.now(UTC) - timedelta(minutes=10)
        first.modify_job(cycle_job_id("coach"), next_run_time=missed)
    finally:
        first.shutdown(wait=False)
    with loopbot.engine.connect() as c:
        assert c.execute(text("select count(*) from apscheduler_jobs")).scalar() == len(ids)

    again = Loopbot(loopbot.settings)  # a new process: same database, nothing in memory
    second = start_scheduler(again)
    try:
        await _wait_for(lambda: crud.list_training_runs(again.engine, persona="coach"))
        (run,) = crud.list_training_runs(again.engine, persona="coach")
        assert run.trigger == "cron" and run.status == "skipped"  # no votes yet: skipped, with the reason
        await _wait_for(lambda: second.get_job(cycle_job_id("coach")).next_run_time > datetime.now(UTC))
        assert second.get_job(cycle_job_id("coach")).next_run_time.hour == 3
    finally:
        second.shutdown(wait=False)
        again.engine.dispose()


async def test_a_bad_cron_is_a_config_error(loopbot):
    loopbot.settings.schedule.cron = "every night"
    with pytest.raises(ConfigError, match=r"schedule\.cron = 'every night'"):
        start_scheduler(loopbot)


async def test_the_check_moves_the_router_to_what_another_process_promoted(loopbot, tiny_adapters):
    crud.create_adapter(loopbot.engine, persona="coach", version=1, base_model="tiny", path=str(tiny_adapters["a"]))
    router = Router(InstantBackend(), unload_grace_s=0)
    loopbot.__dict__["router"] = router
    cli = Loopbot(loopbot.settings)  # `loopbot adapters promote` in another process: no router there
    await promote(cli, "coach", 1)
    assert router.route("coach") is None
    done = await check_once(loopbot)
    assert router.route("coach") == "coach-v1" and done["routes"]["coach"] == "coach-v1"
    await router.aclose()
    cli.engine.dispose()


@pytest.mark.slow
async def test_enough_new_votes_start_one_cycle(loopbot):
    loopbot.settings.schedule.votes_trigger = 20
    loopbot.settings.trainer.method = "sft"
    seed_feedback(loopbot.engine, conversations=5)  # 10 votes
    assert (await check_once(loopbot))["started"] == []
    seed_feedback(loopbot.engine, conversations=10, seed=1)  # 30 votes
    done = await check_once(loopbot)
    assert done["started"] == ["coach"]
    assert (await check_once(loopbot))["started"] == []  # the running cycle holds the lock
    result = await asyncio.wait_for(pending_cycle("coach"), 120)
    assert result.status in ("promoted", "rejected") and result.version == 1
    run = crud.get_training_run(loopbot.engine, run_id=result.run_id)
    assert run.trigger == "votes" and run.dataset_sizes["new_votes"] == 30
    assert (await check_once(loopbot))["started"] == []  # those votes are used now
