"""The training job queue (procrastinate on PostgreSQL): enqueue, real `loopbot worker` processes, one cycle of a
persona at a time, and a worker killed mid-job. The cycles skip (too few votes): what is tested is the queue.

A cycle is held mid-job by a test transaction that locks the `adapters` table: the worker's cycle has taken the run
lock and written its TrainingRun (with its "job" step), then blocks on its first read of `adapters`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from loopbot.base.errors import ConfigError
from loopbot.storage import crud
from loopbot.trainer import jobs
from loopbot.trainer.pipeline import cycle_running, request_cycle
from tests.helpers.databases import truncate_all
from tests.trainer.conftest import FAST_TRAINING, LOOSE_DEGENERACY, loopbot_on
from tests.trainer.synthetic import seed_feedback

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 120


def test_the_sqlalchemy_url_becomes_a_libpq_conninfo():
    info = jobs.conninfo("postgresql+psycopg://bot:s3cret@db.example:5433/loopbot?sslmode=require")
    assert set(info.split()) == {"host=db.example", "port=5433", "dbname=loopbot", "user=bot", "password=s3cret",
                                 "sslmode=require"}


def test_the_queue_is_on_for_postgresql_only(settings):
    assert not jobs.queue_enabled(settings)  # the committed config: SQLite
    on_pg = settings.model_copy(update={"storage": settings.storage.model_copy(
        update={"url": "postgresql+psycopg://postgres@127.0.0.1/x"})})
    assert jobs.queue_enabled(on_pg)
    on_pg.trainer.queue = "off"
    assert not jobs.queue_enabled(on_pg)
    settings.trainer.queue = "postgres"
    with pytest.raises(ConfigError, match=r"needs storage\.url on PostgreSQL"):
        jobs.queue_enabled(settings)


@pytest.fixture
def pg_bot(postgres_url, train_settings):
    """A Loopbot on an emptied PostgreSQL database, procrastinate's tables included, with 6 votes (< 10)."""
    bot = loopbot_on(postgres_url, train_settings)
    truncate_all(bot.engine)
    jobs.ensure_schema(bot.settings)
    with bot.engine.begin() as c:
        c.execute(text("TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_events RESTART IDENTITY "
                       "CASCADE"))
    seed_feedback(bot.engine, conversations=3)
    yield bot
    bot.engine.dispose()


def _env(bot) -> dict:
    """The worker process's settings: the test's, as LOOPBOT_* overrides of the checkout's config.toml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPBOT_")}
    overrides = {"data_dir": str(bot.settings.data_dir), "storage.url": bot.settings.database_url,
                 "models.smollm2.path": bot.settings.models["smollm2"].path, **FAST_TRAINING, **LOOSE_DEGENERACY}
    for dotted, value in overrides.items():
        env["LOOPBOT_" + dotted.replace(".", "__").upper()] = str(value).lower() if isinstance(value, bool) else \
            str(value)
    return {**env, "LOOPBOT_CONFIG": str(ROOT / "config.toml"), "PYTHONPATH": str(ROOT)}


def _worker(bot, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loopbot.cli", "worker", *args], cwd=ROOT, env=_env(bot),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, out
    return out


def _job(bot, job_id: int) -> jobs.JobRow:
    return next(j for j in jobs.list_jobs(bot.settings) if j.id == job_id)


def _wait_for(what: str, check, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the worker exited before {what}: {proc.stdout.read()}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _running_run(bot, job_id: int):
    runs = crud.list_training_runs(bot.engine, persona="coach")
    return next((r for r in runs if r.status == "running" and any(s.get("job_id") == job_id for s in r.steps)), None)


def _hold_cycles(bot):
    """An open transaction locking `adapters`: cycles block after writing their run row until it ends."""
    conn = bot.engine.connect()
    conn.begin()
    conn.execute(text("LOCK TABLE adapters IN ACCESS EXCLUSIVE MODE"))
    return conn


@pytest.mark.postgres
def test_a_requested_cycle_is_queued_and_a_worker_process_runs_it(pg_bot):
    said = request_cycle(pg_bot, "coach", trigger="votes", force=False)
    assert said.startswith("a training cycle of coach queued (job "), said
    assert request_cycle(pg_bot, "coach", trigger="votes", force=False) == "a training cycle of coach is already queued"
    [job] = jobs.list_jobs(pg_bot.settings)
    assert (job.persona, job.trigger, job.status, job.attempts) == ("coach", "votes", "todo", 0)
    assert crud.list_training_runs(pg_bot.engine) == []  # nothing ran in this process

    _finish(_worker(pg_bot, "--once"))
    assert _job(pg_bot, job.id).status == "succeeded"
    [run] = crud.list_training_runs(pg_bot.engine, persona="coach")
    assert run.status == "skipped" and run.trigger == "votes" and "min_new_votes" in run.error
    [step] = [s for s in run.steps if s["step"] == "job"]
    assert step["job_id"] == job.id and step["worker_id"] is not None and step["holder"].endswith(f":job{job.id}")
    assert not cycle_running(pg_bot.engine, "coach")


@pytest.mark.postgres
def test_two_cycles_of_one_persona_never_run_at_once(pg_bot):
    first = jobs.enqueue_cycle(pg_bot.settings, "coach", trigger="cron")
    hold = _hold_cycles(pg_bot)
    try:
        busy = _worker(pg_bot, "--once")
        _wait_for("the first cycle to start", lambda: _running_run(pg_bot, first), busy)
        second = jobs.enqueue_cycle(pg_bot.settings, "coach", trigger="manual")  # one may wait while one runs
        with pytest.raises(jobs.AlreadyQueued):
            jobs.enqueue_cycle(pg_bot.settings, "coach")  # ... but only one
        _finish(_worker(pg_bot, "--once"))  # a second worker finds nothing it may start: the persona's lock
        assert _job(pg_bot, second).status == "todo"
        assert len(crud.list_training_runs(pg_bot.engine, persona="coach")) == 1
    finally:
        hold.rollback()
        hold.close()
    _finish(busy)  # the first worker ends its cycle, then takes the second
    assert [_job(pg_bot, j).status for j in (first, second)] == ["succeeded", "succeeded"]
    later, earlier = crud.list_training_runs(pg_bot.engine, persona="coach")
    assert earlier.status == later.status == "skipped" and later.started_at >= earlier.finished_at


@pytest.mark.postgres
def test_a_worker_killed_mid_job_leaves_a_failed_run_and_the_job_is_retried(pg_bot, tmp_path):
    from loopbot.trainer.job_recovery import recover_stalled_jobs
    from loopbot.trainer.job_worker import worker_app

    live_dir = tmp_path / "v1"
    crud.create_adapter(pg_bot.engine, persona="coach", version=1, base_model="tiny", path=str(live_dir))
    crud.activate_adapter(pg_bot.engine, persona="coach", version=1)
    job_id = jobs.enqueue_cycle(pg_bot.settings, "coach", trigger="cron")
    hold = _hold_cycles(pg_bot)
    try:
        doomed = _worker(pg_bot)
        run = _wait_for("the cycle to start", lambda: _running_run(pg_bot, job_id), doomed)
        assert cycle_running(pg_bot.engine, "coach")
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=WAIT_S)
    finally:
        hold.rollback()
        hold.close()
    assert _job(pg_bot, job_id).status == "doing"  # nobody finished it
    time.sleep(1.5)  # its worker's last heartbeat is now older than stalled_after_s

    async def recover():
        app = worker_app(pg_bot)
        async with app.open_async():
            return await recover_stalled_jobs(app, pg_bot.engine, stalled_after_s=1)

    [done] = asyncio.run(recover())
    assert done["runs"] == [run.id] and done["lock_released"] and done["action"] == "retried"
    failed = crud.get_training_run(pg_bot.engine, run_id=run.id)
    assert failed.status == "failed" and "stopped mid-job" in failed.error and "no heartbeat for 1 s" in failed.error
    assert not cycle_running(pg_bot.engine, "coach")
    job = _job(pg_bot, job_id)
    assert (job.status, job.attempts) == ("todo", 1)
    assert asyncio.run(recover()) == []  # nothing stalled any more

    _finish(_worker(pg_bot, "--once"))  # the retried job runs to its end
    assert _job(pg_bot, job_id).status == "succeeded"
    retried, _ = crud.list_training_runs(pg_bot.engine, persona="coach")
    assert retried.status == "skipped"
    live = crud.active_adapter(pg_bot.engine, persona="coach")
    assert live.version == 1 and live.path == str(live_dir)


@pytest.mark.postgres
def test_a_failed_job_is_retried_by_hand(pg_bot):
    job_id = jobs.enqueue_cycle(pg_bot.settings, "coach")
    with pytest.raises(Exception, match="only a failed, aborted or cancelled job"):
        jobs.retry_job(pg_bot.settings, job_id)
    with pg_bot.engine.begin() as c:
        c.execute(text("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = :id"), {"id": job_id})
    assert jobs.retry_job(pg_bot.settings, job_id) == job_id
    assert _job(pg_bot, job_id).status == "todo"


def _cli(bot, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loopbot.cli", *args], cwd=ROOT, env=_env(bot), capture_output=True,
                          text=True, timeout=WAIT_S)


@pytest.mark.postgres
def test_loopbot_train_enqueue_prints_the_job_id_and_jobs_list_shows_it(pg_bot):
    r = _cli(pg_bot, "train", "--persona", "coach", "--enqueue")
    assert r.returncode == 0 and r.stdout.startswith("queued training job "), r.stdout + r.stderr
    job_id = int(r.stdout.split()[3])
    listed = _cli(pg_bot, "jobs", "list")
    assert listed.returncode == 0 and f"job {job_id}  coach" in listed.stdout and "todo" in listed.stdout, listed
    again = _cli(pg_bot, "train", "--persona", "coach", "--enqueue")
    assert again.returncode != 0 and "already queued" in again.stderr


def test_loopbot_train_enqueue_on_sqlite_says_the_queue_is_off(loopbot):
    r = _cli(loopbot, "train", "--persona", "coach", "--enqueue")
    assert r.returncode == 2 and "--enqueue needs the training queue" in r.stderr and "SQLite" in r.stderr, r.stderr
    assert _cli(loopbot, "worker", "--once").returncode == 2


@pytest.mark.postgres
async def test_the_nightly_cron_queues_the_cycle_when_the_queue_is_on(pg_bot, monkeypatch):
    from loopbot.trainer import schedule

    monkeypatch.setattr(schedule, "_loopbot", pg_bot)
    said = await schedule.scheduled_cycle("coach")
    assert "queued" in said
    [job] = jobs.list_jobs(pg_bot.settings)
    assert (job.persona, job.trigger, job.status) == ("coach", "cron", "todo")
    assert crud.list_training_runs(pg_bot.engine) == []


@pytest.mark.postgres
def test_the_dashboards_train_button_queues_a_cycle_after_confirmation(pg_bot, monkeypatch):
    from fastapi.testclient import TestClient

    from loopbot.web.app import create_app
    from tests.web.conftest import ADMIN_TOKEN
    from tests.web.forms import hidden_fields

    monkeypatch.setenv(pg_bot.settings.web.admin_token_env, ADMIN_TOKEN)
    with TestClient(create_app(pg_bot), headers={"accept": "text/html"}) as client:
        assert client.post("/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False).status_code == 303
        ask = client.post("/admin/coach/train", data=hidden_fields(client.get("/admin").text, "/admin/coach/train"))
        assert ask.status_code == 200 and "Train coach now" in ask.text
        assert jobs.list_jobs(pg_bot.settings) == []  # nothing before the confirmation
        done = client.post("/admin/coach/train", data=hidden_fields(ask.text))
        assert done.status_code == 200 and "a training cycle of coach queued (job" in done.text
        again = client.post("/admin/coach/train", data=hidden_fields(
            client.post("/admin/coach/train", data=hidden_fields(client.get("/admin").text,
                                                                  "/admin/coach/train")).text))
        assert "already queued" in again.text
    [job] = jobs.list_jobs(pg_bot.settings)
    assert (job.persona, job.trigger, job.status) == ("coach", "dashboard", "todo")
