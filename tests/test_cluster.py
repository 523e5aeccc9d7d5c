"""A cluster on loopback with no shared disk (docs/deploying.md#several-hosts): two `loopbot serve` hosts with a real
vLLM-on-CPU replica each, two bot processes behind one Telegram webhook address, a web process, the scheduler and a
training worker, each with a directory of its own, sharing only PostgreSQL, Redis and an S3 server (moto).

Users chat and vote through both bot processes; an admin's /train queues a cycle; the worker trains, publishes the
adapter to the bucket and promotes it; both replicas fetch it from the bucket and load it; both bot processes flip
their route with no failed request; a rate limit holds across the two bot processes; a worker killed mid-job leaves
the live version serving and a failed run. Slow: two vLLM servers start (~2-3 min on 2 cores)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import httpx
import pytest

from loopbot.storage import crud
from loopbot.storage.db import make_engine
from testkit.cluster import Cluster
from testkit.fake_telegram import FakeTelegram
from testkit.ports import free_port
from testkit.tiny_model import build_tiny_model
from tests.helpers.databases import create_postgres_database, drop_postgres_database, postgres_unreachable_reason
from tests.helpers.redis import redis_or_skip
from tests.helpers.s3 import DUMMY_CREDENTIALS, make_bucket, s3_client
from tests.trainer.conftest import FAST_TRAINING, LOOSE_DEGENERACY
from tests.trainer.synthetic import seed_feedback

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/5"  # this test's own Redis database, emptied before and after
SECRET = "cluster-webhook-secret-0123456789"
ADMIN = 900
PER_MINUTE = 4


def _env_overrides(settings: dict) -> dict[str, str]:
    """{"trainer.sft.max_steps": 40} -> {"LOOPBOT_TRAINER__SFT__MAX_STEPS": "40"}"""
    return {"LOOPBOT_" + k.upper().replace(".", "__"): json.dumps(v) if isinstance(v, (list, bool)) else str(v)
            for k, v in settings.items()}


async def models_on(url: str) -> set[str]:
    async with httpx.AsyncClient(trust_env=False) as http:
        return {m["id"] for m in (await http.get(f"{url}/v1/models", timeout=10)).json()["data"]}


async def poll(check, limit_s: float, what: str, cluster: Cluster, every: float = 0.5):
    """check() (sync or async) until it returns something truthy; fails with every host's log tail."""
    deadline = time.monotonic() + limit_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {limit_s:.0f} s\n{cluster.logs()}")
        await asyncio.sleep(every)


def seconds_since(when) -> float:
    """Seconds from a database timestamp (UTC, maybe naive) to now."""
    from datetime import UTC, datetime

    return (datetime.now(UTC) - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()


def sql(engine, query: str) -> list[tuple]:
    from sqlalchemy import text

    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(query))]


def replies(fake: FakeTelegram, chat: int) -> list:
    return [m for m in fake.bot_messages(chat) if m.reply_markup]


@pytest.fixture
def vllm_model(tmp_path_factory):
    """A tiny base model vLLM's CPU attention can serve (head size 32)."""
    return build_tiny_model(tmp_path_factory.mktemp("cluster-model") / "tiny", hidden=128)


async def test_a_cluster_without_a_shared_disk_trains_publishes_and_flips_every_host(tmp_path, s3_server, vllm_model):
    if reason := postgres_unreachable_reason():
        pytest.skip(reason)
    redis = await redis_or_skip(REDIS_URL, flush=True)
    db_url = create_postgres_database()
    bucket = make_bucket(s3_server)
    fake = await FakeTelegram().start()
    fake.webhook_serial = True
    vllm_ports = [free_port(), free_port()]
    replicas = [f"http://127.0.0.1:{p}" for p in vllm_ports]
    hook_port, web_port = free_port(), free_port()
    hook_url = f"http://127.0.0.1:{hook_port}/telegram"
    shared = {**DUMMY_CREDENTIALS, **_env_overrides({
        **FAST_TRAINING, **LOOSE_DEGENERACY,
        "storage.url": db_url, "storage.artifacts_url": f"s3://{bucket}/cluster",
        "storage.s3.endpoint_url": s3_server, "shared.redis_url": REDIS_URL, "trainer.queue": "postgres",
        "trainer.lora.r": 8, "trainer.gate.watch_votes": 0,
        "serving.backend": "vllm", "serving.vllm.urls": replicas, "serving.vllm.adapters_from": "store",
        "serving.vllm.sync_interval_s": 1, "serving.vllm.unload_grace_s": 2, "serving.vllm.max_model_len": 512,
        "serving.vllm.max_loras": 3, "serving.reconcile_interval_s": 1,
        "schedule.votes_trigger": 0, "schedule.check_interval_s": 2, "feedback.arena_rate": 0,
        "access.messages_per_minute": PER_MINUTE, "access.admins": [f"telegram:{ADMIN}"],
        "telegram.mode": "webhook", "telegram.webhook_url": hook_url, "telegram.webhook_port": hook_port,
        "telegram.webhook_reuse_port": True, "telegram.edit_interval_s": 0.05,
        "telegram.base_url": fake.base_url, "telegram.base_file_url": fake.base_file_url,
        "web.port": web_port, "personas.coach.sampling.max_tokens": 6})}
    bot_env = {"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_WEBHOOK_SECRET": SECRET}
    cluster = Cluster(tmp_path / "hosts", shared, vllm_model)
    engine = make_engine(db_url)
    try:
        from loopbot.storage.db import upgrade

        upgrade(engine)
        seed_feedback(engine, conversations=40)  # the votes of earlier days, with a planted taste
        serves = [cluster.add(f"vllm{i}", ["serve", "--port", str(p)]) for i, p in enumerate(vllm_ports, 1)]
        for host in serves:
            await host.start()
        worker = await cluster.add("worker", ["worker"]).start()
        await cluster.add("scheduler", ["run", "--only", "scheduler"]).start()
        web = await cluster.add("web", ["run", "--only", "web"]).start()
        for host in serves:
            await host.wait_log("Ctrl-C to stop", timeout=480)
        bots = [await cluster.add(f"bots{i}", ["run", "--only", "bots"], bot_env).start() for i in (1, 2)]
        await poll(lambda: fake.count("setWebhook") >= 2, 120, "both bot processes registered the webhook", cluster)

        # users chat and vote through both processes (the load balancer here is the kernel: SO_REUSEPORT)
        users = list(range(1, 9))
        for u in users:
            fake.send(f"How should I train for my first race, coach? ({u})", user_id=u)
        await poll(lambda: all(replies(fake, u) for u in users), 180, "every user answered", cluster)
        for u in users:
            reply = replies(fake, u)[0]
            fake.press(reply, reply.data("👍" if u % 2 else "👎"))
        await poll(lambda: sum(crud.vote_counts(engine, persona="coach")) >= 80 + len(users), 30, "the votes stored",
                   cluster)

        # one user's messages per minute are limited across both processes: PER_MINUTE answered, not 2x
        for i in range(PER_MINUTE + 2):
            fake.send(f"question {i}", user_id=50)
        await poll(lambda: len(fake.bot_messages(50)) >= PER_MINUTE + 2, 120, "user 50 answered or told", cluster)
        await asyncio.sleep(1.0)
        told = [m for m in fake.bot_messages(50) if "faster than I can answer" in (m.text or "")]
        assert (len(replies(fake, 50)), len(told)) == (PER_MINUTE, 2), [m.text for m in fake.bot_messages(50)]

        # chat on while a new version goes live: no request may fail
        failures: list[str] = []
        chatting = asyncio.Event()

        async def chatter():
            n = 0
            while not chatting.is_set():
                user = 100 + n % 60  # 60 users, a message each 0.5 s or more: each stays under its limit
                before = len(replies(fake, user))
                fake.send(f"and how far on Sunday? {n}", user_id=user)
                try:
                    await poll(lambda u=user, b=before: len(replies(fake, u)) > b, 60, f"reply to chatter {n}",
                               cluster, every=0.1)
                except AssertionError:
                    failures.append(f"no reply to chatter message {n}")
                n += 1
                await asyncio.sleep(0.5)
            return n

        chat_task = asyncio.create_task(chatter())
        fake.send("/train", user_id=ADMIN)
        answer = await poll(lambda: [m for m in fake.bot_messages(ADMIN) if "training" in (m.text or "")], 60,
                            "/train answered", cluster)
        assert "queued" in answer[0].text, answer[0].text
        run = await poll(lambda: next((r for r in crud.list_training_runs(engine, persona="coach")
                                       if r.status not in ("running",)), None), 600, "the cycle ended", cluster)
        assert run.status == "promoted", (run.status, run.error, worker.log()[-3000:])
        v1 = crud.active_adapter(engine, persona="coach")
        assert v1.name == "coach-v1" and v1.artifact_uri == f"s3://{bucket}/cluster/adapters/coach/v1"
        keys = {o["Key"] for o in s3_client(s3_server).list_objects_v2(Bucket=bucket)["Contents"]}
        assert "cluster/adapters/coach/v1/adapter_model.safetensors" in keys
        assert not (cluster.hosts["vllm1"].dir / "data" / "adapters").exists()  # nothing trained on a vLLM host
        await poll(lambda: asyncio.gather(*(models_on(u) for u in replicas)), 1, "replicas answer", cluster)

        async def both_replicas_hold():
            return all("coach-v1" in m for m in await asyncio.gather(*(models_on(u) for u in replicas)))

        await poll(both_replicas_hold, 120, "both replicas loaded coach-v1 from the bucket", cluster, every=0.1)
        held = seconds_since(run.finished_at)
        await poll(lambda: all("route coach: the base model -> coach-v1" in b.log() for b in bots), 120,
                   "both bot processes route coach to coach-v1", cluster, every=0.1)
        routed = seconds_since(run.finished_at)
        for host in serves:
            assert "loaded coach-v1 from s3://" in host.log()
        await asyncio.sleep(2.0)
        chatting.set()
        sent = await asyncio.wait_for(chat_task, 90)
        assert sent > 0 and failures == [], failures
        assert sql(engine, "SELECT count(*) FROM generations WHERE status = 'error'") == [(0,)]
        served = sql(engine, "SELECT DISTINCT adapter_version FROM generations WHERE persona = 'coach'")
        assert {v for (v,) in served} >= {None, "coach-v1"}, served
        print(f"\ncluster: cycle finished -> both replicas hold coach-v1 in {held:.1f} s; "
              f"-> both bot processes route to it in {routed:.1f} s; {sent} chats during the flip")

        # a worker killed mid-job: the live version keeps serving, the run is failed
        await worker.stop()
        seed_feedback(engine, conversations=20, seed=1)
        slow = await cluster.add("worker2", ["worker"], _env_overrides(
            {"trainer.sft.max_steps": 100_000, "trainer.dpo.max_steps": 100_000})).start()
        fake.send("/train", user_id=ADMIN)
        train_logs = slow.dir / "data" / "logs" / "train"
        await poll(lambda: train_logs.is_dir() and any("stage " in p.read_text(errors="replace")
                                                      for p in train_logs.iterdir()), 300, "training started", cluster)
        await slow.stop(signal.SIGKILL)
        await asyncio.sleep(16.0)  # workers beat every 10 s: silent for 15 s = dead
        recovery = await cluster.add("ops", ["jobs", "recover", "--stalled-after", "15"]).start()
        assert await asyncio.wait_for(recovery.proc.wait(), 120) == 0, recovery.log()
        runs = crud.list_training_runs(engine, persona="coach")
        killed = max(runs, key=lambda r: r.id)
        assert killed.status == "failed" and "stopped mid-job" in killed.error, (killed.status, killed.error)
        assert crud.active_adapter(engine, persona="coach").name == "coach-v1"
        before = len(replies(fake, 7))
        fake.send("still there?", user_id=7)
        await poll(lambda: len(replies(fake, 7)) > before, 60, "a reply after the worker died", cluster)
        assert all("coach-v1" in m for m in await asyncio.gather(*(models_on(u) for u in replicas)))
        await web.stop()
    finally:
        codes = {}
        for name, host in reversed(list(cluster.hosts.items())):
            codes[name] = await host.stop()
        engine.dispose()
        await fake.stop()
        await redis.flushdb()
        await redis.aclose()
        drop_postgres_database(db_url)
    for name in ("bots1", "bots2", "web", "scheduler"):
        assert codes[name] == 0 and "Traceback" not in cluster.hosts[name].log(), (name, cluster.hosts[name].log())
    handled = [int(re.search(r"this process handled (\d+) updates", b.log()).group(1)) for b in bots]
    assert all(handled), f"each bot process handled some of the webhook updates: {handled}"
