"""`loopbot run` as a user starts it: a real process with the Telegram bot (against the loopback Bot API), the
schedule and the web pages; it answers, and SIGTERM stops everything cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from testkit.fake_telegram import TOKEN, FakeTelegram
from testkit.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_run_serves_telegram_and_web_then_stops_on_sigterm(tmp_path, tiny_model_dir):
    fake = await FakeTelegram().start()
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPBOT_") and k != "DISCORD_BOT_TOKEN"}
    env.update({"TELEGRAM_BOT_TOKEN": TOKEN, "LOOPBOT_TELEGRAM__BASE_URL": fake.base_url,
                "LOOPBOT_TELEGRAM__BASE_FILE_URL": fake.base_file_url, "LOOPBOT_DATA_DIR": str(tmp_path / "data"),
                "LOOPBOT_WEB__PORT": str(web_port), "LOOPBOT_MODELS__SMOLLM2__PATH": str(tiny_model_dir),
                "LOOPBOT_SERVING__LOCAL__DEVICE": "cpu", "LOOPBOT_PERSONAS__COACH__SAMPLING__MAX_TOKENS": "4",
                "LOOPBOT_FEEDBACK__ARENA_RATE": "0"})
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "loopbot.cli", "--config",
                                                str(ROOT / "config.toml"), "run", env=env, cwd=tmp_path,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await fake.wait_for(lambda: fake.count("setMyCommands"), timeout=120)
        fake.send("/help", user_id=1)
        help_ = await fake.wait_for(lambda: fake.bot_messages(1), timeout=30)
        assert "Rate every answer" in help_[0].text
        fake.send("How far is a marathon?", user_id=1)
        reply = await fake.final_reply(1, after=help_[0].message_id, timeout=120)
        assert reply.text.strip() and reply.buttons
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    await client.get(f"http://127.0.0.1:{web_port}/health")  # any HTTP answer: it is up
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the web pages never answered")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        stopped_in = time.monotonic() - started
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert stopped_in < 20 and "Traceback" not in stderr.decode()
        assert "stopping: web, scheduler, telegram, serving" in stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.stop()
