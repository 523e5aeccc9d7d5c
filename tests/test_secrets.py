"""No secret in any output: bot tokens are masked in logs (DEBUG included) and in the one-line error of a rejected
token; `loopbot serve` hands vLLM its API key through the environment, not the command line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from loopbot.app import configure_logging
from loopbot.base import redact
from testkit.fake_telegram import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
# shaped like a real one: <bot id>:<35 characters>
TELEGRAM_TOKEN = "7012345678:AAHk3nQv9xZ_b7-LmPq2RsTuVwXyZaBcDeF"
REJECTED_TOKEN = "7012345678:AAHzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GxYzAb.c2VjcmV0LWRpc2NvcmQtdG9rZW4tdmFsdWU"


async def _loopbot_run(fake: FakeTelegram, token: str, tmp_path: Path, *, log_level: str, stop_when=None):
    """`loopbot run` as a user starts it, with only the Telegram bot (no web pages, no schedule, no model call);
    stopped with SIGTERM once `stop_when()` holds, or left to exit by itself. Returns (exit code, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPBOT_") and k != "DISCORD_BOT_TOKEN"}
    env.update({"TELEGRAM_BOT_TOKEN": token, "LOOPBOT_TELEGRAM__BASE_URL": fake.base_url,
                "LOOPBOT_TELEGRAM__BASE_FILE_URL": fake.base_file_url, "LOOPBOT_DATA_DIR": str(tmp_path / "data"),
                "LOOPBOT_WEB__ENABLED": "false", "LOOPBOT_SCHEDULE__ENABLED": "false",
                "LOOPBOT_LOG_LEVEL": log_level, "NO_PROXY": "127.0.0.1,localhost"})
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "loopbot.cli", "--config",
                                                str(ROOT / "config.toml"), "run", env=env, cwd=tmp_path,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        if stop_when is not None:
            await fake.wait_for(stop_when, timeout=90)
            await asyncio.sleep(1)  # polling has started
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode() + err.decode()


async def test_loopbot_run_at_debug_level_never_shows_the_telegram_token(tmp_path):
    fake = await FakeTelegram(token=TELEGRAM_TOKEN).start()
    try:
        code, output = await _loopbot_run(fake, TELEGRAM_TOKEN, tmp_path, log_level="DEBUG",
                                          stop_when=lambda: fake.count("deleteWebhook"))
    finally:
        await fake.stop()
    assert code == 0, output[-3000:]
    assert "Calling Bot API endpoint `getMe`" in output  # DEBUG logging of python-telegram-bot was on
    assert "Set Bot API URL" in output and f"{fake.base_url}***" in output  # the URL it logs, token masked
    assert TELEGRAM_TOKEN not in output and TELEGRAM_TOKEN.split(":")[1] not in output


async def test_a_rejected_telegram_token_is_one_line_with_InvalidToken_and_no_token(tmp_path):
    fake = await FakeTelegram(token=TELEGRAM_TOKEN).start()  # answers 401 Unauthorized to any other token
    try:
        code, output = await _loopbot_run(fake, REJECTED_TOKEN, tmp_path, log_level="INFO")
    finally:
        await fake.stop()
    assert code != 0
    errors = [line for line in output.splitlines() if "InvalidToken" in line]
    assert len(errors) == 1, output
    assert "token 7012345678:*** in TELEGRAM_BOT_TOKEN" in errors[0] and "Traceback" not in output
    assert REJECTED_TOKEN not in output and REJECTED_TOKEN.split(":")[1] not in output


@pytest.fixture
def debug_logging():
    """configure_logging at DEBUG, with the libraries' loggers opened up; everything restored afterwards."""
    names = ("httpx", "httpcore", "telegram", "discord")
    saved = {name: logging.getLogger(name).level for name in names}
    yield lambda secrets: (configure_logging("DEBUG", secrets=secrets),
                           [logging.getLogger(name).setLevel(logging.DEBUG) for name in names])
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    redact.clear_secrets()


def test_the_log_filter_masks_tokens_from_httpx_telegram_and_discord_logs(caplog, debug_logging):
    caplog.set_level(logging.DEBUG)
    debug_logging([DISCORD_TOKEN])
    url = f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/getMe"
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "POST", url, "HTTP/1.1 200 OK")
    logging.getLogger("telegram.ext.ExtBot").debug("Set Bot API URL: %s", url[:-6])
    logging.getLogger("discord.http").debug("GET /gateway with {'Authorization': 'Bot %s'}", DISCORD_TOKEN)
    try:
        raise RuntimeError(f"could not reach {url}")
    except RuntimeError:
        logging.getLogger("telegram.ext.Updater").exception("polling failed")
    text = caplog.text
    assert "POST https://api.telegram.org/bot***/getMe" in text and "Bot ***" in text
    assert "RuntimeError: could not reach https://api.telegram.org/bot***/getMe" in text
    assert TELEGRAM_TOKEN not in text and DISCORD_TOKEN not in text


def test_serve_hands_vllm_its_api_key_through_the_environment(tmp_path):
    from loopbot.serving.vllm_server import VllmServer

    key = "sk-local-9f8e7d6c5b4a"
    server = VllmServer(tmp_path / "model", served_name="smollm2", api_key=key)
    command = server.command()
    assert not any(key in part for part in command) and "--api-key" not in command
    assert server.environment()["VLLM_API_KEY"] == key
    keyless = VllmServer(tmp_path / "model", served_name="smollm2")
    assert "--api-key" not in keyless.command()
    assert keyless.environment().get("VLLM_API_KEY") == os.environ.get("VLLM_API_KEY")


def test_every_secret_the_settings_name_is_masked(settings):
    env = {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
           "MISTRAL_API_KEY": "mistral-key-0123456789", "LOOPBOT_ADMIN_TOKEN": "admin-token-abcdef"}
    found = redact.settings_secrets(settings, env)
    assert sorted(found) == sorted(env.values())
    try:
        redact.add_secrets(found)
        text = " ".join(f"{name}={value}" for name, value in env.items())
        assert redact.redact(text) == " ".join(f"{name}=***" for name in env)
    finally:
        redact.clear_secrets()
