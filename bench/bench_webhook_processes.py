"""Two bot processes behind one Telegram webhook address vs one (docs/deploying.md#several-hosts): messages/s through
`loopbot run` (the instant backend, PostgreSQL, Redis, SO_REUSEPORT) on the loopback Bot API, the same burst of
messages (one per user) sent to one process, then to two, in the same run. On 2 cores the two processes share the
cores with the fake Bot API and PostgreSQL, so this shows what the cores allow, not what two hosts would."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BURST = 200
REDIS_URL = "redis://127.0.0.1:6379/6"  # the bench's own Redis database, emptied before each round
SECRET = "bench-webhook-secret-0123456789"


async def _round(processes: int, postgres_url: str, tmp: Path) -> float:
    """Messages/s for a burst of BURST messages (one per user) through `processes` bot processes."""
    import redis.asyncio

    from loopbot.storage.db import make_engine
    from testkit.fake_telegram import FakeTelegram
    from testkit.ports import free_port
    from testkit.processes import stop_processes
    from tests.helpers.databases import truncate_all

    engine = make_engine(postgres_url)
    truncate_all(engine)
    engine.dispose()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()
    fake = await FakeTelegram(token=f"{random.randrange(10**8, 10**9)}:BENCH").start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPBOT_") and k != "DISCORD_BOT_TOKEN"}
    env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_WEBHOOK_SECRET": SECRET,
                "LOOPBOT_TELEGRAM__BASE_URL": fake.base_url, "LOOPBOT_TELEGRAM__BASE_FILE_URL": fake.base_file_url,
                "LOOPBOT_TELEGRAM__MODE": "webhook", "LOOPBOT_TELEGRAM__WEBHOOK_URL": f"http://127.0.0.1:{port}/tg",
                "LOOPBOT_TELEGRAM__WEBHOOK_PORT": str(port), "LOOPBOT_TELEGRAM__WEBHOOK_REUSE_PORT": "true",
                "LOOPBOT_SHARED__REDIS_URL": REDIS_URL, "LOOPBOT_STORAGE__URL": postgres_url,
                "LOOPBOT_DATA_DIR": str(tmp / "data"), "LOOPBOT_WEB__ENABLED": "false",
                "LOOPBOT_SCHEDULE__ENABLED": "false", "LOOPBOT_FEEDBACK__ARENA_RATE": "0",
                "LOOPBOT_ACCESS__MESSAGES_PER_MINUTE": "1000", "LOOPBOT_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    procs = []
    try:
        for i in range(processes):
            with (tmp / f"bot{processes}-{i}.log").open("wb") as out:
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "testkit.instant_run", str(ROOT / "config.toml"), env=env, cwd=tmp,
                    stdout=out, stderr=out))
        await fake.wait_for(lambda: fake.count("setWebhook") >= processes, timeout=120)
        users = range(10_000, 10_000 + BURST)

        def answered() -> bool:
            return all(any(m.reply_markup for m in fake.bot_messages(u)) for u in users)

        for u in users:  # warm-up: every user has talked to the bot before
            fake.send("hello", user_id=u)
        await fake.wait_for(answered, timeout=300)
        lost = len(fake.webhook_failures)
        before = {u: len(fake.bot_messages(u)) for u in users}
        started = time.perf_counter()
        for u in users:
            fake.send("how far should I run today?", user_id=u)
        await fake.wait_for(lambda: all(sum(1 for m in fake.bot_messages(u)[before[u]:] if m.reply_markup) >= 1
                                        for u in users), timeout=300)
        rate = BURST / (time.perf_counter() - started)
        if fake.webhook_failures[lost:]:
            print(f"{processes} process(es): {len(fake.webhook_failures) - lost} deliveries re-sent after a "
                  f"connection error", file=sys.stderr)
        return rate
    finally:
        await stop_processes(procs)
        await fake.stop()


async def _measure() -> tuple[float, float]:
    from loopbot.storage.db import make_engine, upgrade
    from tests.helpers.databases import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
            one = await _round(1, url, Path(tmp))
            two = await _round(2, url, Path(tmp))
        return two, one
    finally:
        drop_postgres_database(url)


def run() -> dict:
    two, one = asyncio.run(_measure())
    return {"name": f"Telegram webhook: 2 bot processes vs 1 behind one address ({BURST} messages, PostgreSQL, Redis)",
            "figure": two, "baseline": one, "unit": "msg/s"}


if __name__ == "__main__":
    row = run()
    print(f"{row['name']}: {row['figure']:.0f} vs {row['baseline']:.0f} {row['unit']} "
          f"= {row['figure'] / row['baseline']:.2f}x")
