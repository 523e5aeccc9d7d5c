"""The Telegram bot's own overhead: messages through the real path (python-telegram-bot -> chat core -> database ->
serving router -> instant backend -> rendered reply with buttons) against a bare python-telegram-bot echo bot, both on
the same loopback Bot API in the same run. Throughput: a burst of messages from many users; latency: one message at a
time. Both rounds come from users who have talked to the bot before (a warm-up round), as most messages to a live bot
do."""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BURST = 200  # messages sent at once, one per user
SEQUENTIAL = 60  # messages sent one after another, for latency
ROUNDS = 2


async def _echo_bot(fake):
    from telegram.ext import ApplicationBuilder, MessageHandler, filters

    async def echo(update, context):
        await context.bot.send_message(update.message.chat.id, update.message.text)

    from loopbot.bot.telegram import CONNECTIONS, POOL_TIMEOUT_S

    # the same HTTP settings as loopbot's bot, so the difference is the bot's own work
    app = (ApplicationBuilder().token(fake.token).base_url(fake.base_url).base_file_url(fake.base_file_url)
           .concurrent_updates(True).connection_pool_size(CONNECTIONS).pool_timeout(POOL_TIMEOUT_S).build())
    app.add_handler(MessageHandler(filters.TEXT, echo))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0, timeout=5)

    async def stop():
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
    return stop


async def _loopbot(fake, tmp: str):
    from loopbot.base.config import load_settings
    from loopbot.bot.chat import ChatService
    from loopbot.bot.telegram import TelegramBot
    from loopbot.serving.router import Router
    from loopbot.storage.db import make_engine, upgrade
    from testkit.instant_backend import InstantBackend

    settings = load_settings(ROOT / "config.toml", env={}, overrides={"data_dir": tmp})
    settings.feedback.arena_rate = 0.0
    settings.access.messages_per_minute = 1_000_000
    settings.telegram.base_url, settings.telegram.base_file_url = fake.base_url, fake.base_file_url
    engine = make_engine(settings.database_url)
    upgrade(engine)
    service = ChatService(engine, settings, Router(InstantBackend(), routes={}), rng=random.Random(0))
    bot = TelegramBot(service, settings.telegram, fake.token, poll_timeout_s=5)
    await bot.start()

    async def stop():
        await bot.stop()
        engine.dispose()
    return stop


def _answered(fake, chat_id: int, with_buttons: bool, after: int = 0) -> bool:
    return any((m.reply_markup or not with_buttons) and m.message_id > after for m in fake.bot_messages(chat_id))


async def _measure(fake, first_user: int, with_buttons: bool) -> tuple[float, list[float]]:
    """(messages per second for a burst, per-message latencies in ms one at a time)."""
    users = range(first_user, first_user + BURST)
    start = time.perf_counter()
    sent = {u: fake.send(f"How should I pace a marathon, question {u}?", user_id=u)["message_id"] for u in users}
    await fake.wait_for(lambda: all(_answered(fake, u, with_buttons, sent[u]) for u in users), timeout=300)
    throughput = BURST / (time.perf_counter() - start)
    latencies = []
    for i in range(SEQUENTIAL):
        u = first_user + BURST + i
        started = time.perf_counter()
        asked = fake.send("What should I eat the night before a race?", user_id=u)["message_id"]
        await fake.wait_for(lambda u=u, asked=asked: _answered(fake, u, with_buttons, asked), timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
    return throughput, latencies


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def _run() -> list[dict]:
    from testkit.fake_telegram import FakeTelegram

    fake = await FakeTelegram().start()
    results = {"echo": ([], []), "ours": ([], [])}
    first_user = 1_000_000
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(ROUNDS):  # alternate, so a busy moment on a shared machine hits both sides alike
                for side, starter, buttons in (("echo", lambda: _echo_bot(fake), False),
                                               ("ours", lambda: _loopbot(fake, tmp), True)):
                    stop = await starter()
                    await _measure(fake, first_user, buttons)  # warm-up: the same users say hello first
                    tput, lat = await _measure(fake, first_user, buttons)  # returning users, as in a live bot
                    first_user += 1_000_000
                    await stop()
                    results[side][0].append(tput)
                    results[side][1].extend(lat)
    finally:
        await fake.stop()
    echo_tput, echo_lat = statistics.median(results["echo"][0]), results["echo"][1]
    ours_tput, ours_lat = statistics.median(results["ours"][0]), results["ours"][1]
    added50 = _p(ours_lat, 50) - _p(echo_lat, 50)
    added99 = _p(ours_lat, 99) - _p(echo_lat, 99)
    return [
        {"name": f"telegram: messages/s, burst of {BURST}, median of {ROUNDS} (loopbot vs bare PTB echo bot)",
         "figure": ours_tput, "baseline": echo_tput, "unit": "msg/s", "goal": "ratio >= 0.7"},
        {"name": f"telegram: p50 latency per message, ms (added {added50:.1f} ms)", "figure": _p(ours_lat, 50),
         "baseline": _p(echo_lat, 50), "unit": "ms", "goal": "added p50 informational", "met": None},
        {"name": f"telegram: p99 latency per message, ms (added {added99:.1f} ms)", "figure": _p(ours_lat, 99),
         "baseline": _p(echo_lat, 99), "unit": "ms", "goal": "added p99 < 20 ms", "met": added99 < 20},
    ]


def run() -> list[dict]:
    import logging

    logging.getLogger("telegram").setLevel(logging.WARNING)
    return asyncio.run(_run())


if __name__ == "__main__":
    rows = run()
    print(f"{'benchmark':78} {'figure':>9} {'baseline':>9} {'ratio':>6}  goal")
    for row in rows:
        ratio = row["figure"] / row["baseline"] if row["baseline"] else float("nan")
        met = {True: "met", False: "NOT met", None: ""}[row.get("met", ratio >= 0.7 if "ratio" in row["goal"]
                                                                   else None)]
        print(f"{row['name']:78} {row['figure']:9.1f} {row['baseline']:9.1f} {ratio:6.2f}  {row['goal']} {met}")
