"""Two real bot processes serve one Telegram webhook address (SO_REUSEPORT) against the loopback Bot API, sharing
Redis and PostgreSQL: every message is answered once, each chat in the order it was written."""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession

from testkit.fake_telegram import FakeTelegram
from testkit.ports import free_port
from testkit.processes import stop_processes
from tests.helpers.redis import redis_or_skip

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "webhook-secret-shared-by-both"


@pytest.mark.postgres
async def test_two_processes_on_one_webhook_port_answer_each_message_once_and_in_order(tmp_path, postgres_url):
    from loopbot.storage.db import make_engine
    from tests.helpers.databases import truncate_all

    engine = make_engine(postgres_url)
    truncate_all(engine)
    engine.dispose()
    redis = await redis_or_skip(REDIS_URL)
    bot_id = random.randrange(10**8, 10**9)  # its own Redis keys (loopbot:telegram:BOT_ID:*) in a shared Redis
    fake = await FakeTelegram(token=f"{bot_id}:TEST-token").start()
    fake.webhook_serial = True  # Telegram's order; each delivery on a new connection, so the kernel spreads them
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPBOT_") and k != "DISCORD_BOT_TOKEN"}
    env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_WEBHOOK_SECRET": SECRET,
                "LOOPBOT_TELEGRAM__BASE_URL": fake.base_url, "LOOPBOT_TELEGRAM__BASE_FILE_URL": fake.base_file_url,
                "LOOPBOT_TELEGRAM__MODE": "webhook", "LOOPBOT_TELEGRAM__WEBHOOK_URL": url,
                "LOOPBOT_TELEGRAM__WEBHOOK_PORT": str(port), "LOOPBOT_TELEGRAM__WEBHOOK_REUSE_PORT": "true",
                "LOOPBOT_TELEGRAM__EDIT_INTERVAL_S": "0.05", "LOOPBOT_SHARED__REDIS_URL": REDIS_URL,
                "LOOPBOT_STORAGE__URL": postgres_url, "LOOPBOT_DATA_DIR": str(tmp_path / "data"),
                "LOOPBOT_WEB__ENABLED": "false", "LOOPBOT_SCHEDULE__ENABLED": "false",
                "LOOPBOT_FEEDBACK__ARENA_RATE": "0", "LOOPBOT_ACCESS__MESSAGES_PER_MINUTE": "1000",
                "PYTHONPATH": str(ROOT)})
    logs = [tmp_path / f"bot{i}.log" for i in range(2)]
    procs = []
    try:
        for log in logs:
            with log.open("wb") as out:
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "testkit.instant_run", str(ROOT / "config.toml"), env=env, cwd=tmp_path,
                    stdout=out, stderr=out))
        await fake.wait_for(lambda: fake.count("setWebhook") >= 2, timeout=120)
        assert fake.webhook == {"url": url, "secret_token": SECRET,
                                "allowed_updates": ["message", "callback_query", "message_reaction"]}

        chats = [101, 102, 103, 104]
        sent = {c: [] for c in chats}
        for i in range(6):  # interleaved; the slow ones would be overtaken if a chat's messages ran side by side
            for c in chats:
                text = f"m{i} {'slow' if (i + c) % 2 else 'quick'}"
                fake.send(text, user_id=c)
                sent[c].append(text)

        def all_answered():
            return all(sum(1 for m in fake.bot_messages(c) if m.reply_markup) >= 6 for c in chats)

        await fake.wait_for(all_answered, timeout=60)
        first = fake.webhook_updates[0]
        assert await fake.redeliver(first) == 200  # Telegram re-sends (say the first answer came too late)
        async with ClientSession() as session, session.post(url, json={"update_id": 10**6, "message": {}},
                                                            headers={"X-Telegram-Bot-Api-Secret-Token": "no"}) as r:
            assert r.status == 403
        await asyncio.sleep(1.0)  # time for a wrong second reply to show
        for c in chats:
            replies = [m.text for m in fake.bot_messages(c)]
            assert replies == [f"[base] {t}" for t in sent[c]], (c, replies)
        assert set(fake.webhook_responses) == {200}
    finally:
        await stop_processes(procs)
        await fake.stop()
        async for key in redis.scan_iter(f"loopbot:telegram:{bot_id}:*"):
            await redis.delete(key)
        await redis.aclose()
    texts = [log.read_text() for log in logs]
    handled = [set(map(int, re.findall(r"handled update (\d+)", t))) for t in texts]
    assert all(handled), ("each process handled some updates", [len(h) for h in handled], texts[0][-2000:])
    assert not handled[0] & handled[1] and len(handled[0] | handled[1]) == 24
    assert all(p.returncode == 0 for p in procs) and not any("Traceback" in t for t in texts), texts
