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


async def _loopbot(fake, tmp: str, database_url: str | None = None):
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
    engine = make_engine(database_url or settings.database_url)
    if database_url is None:
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


async def _run(postgres_url: str | None) -> dict[str, tuple[list[float], list[float]]]:
    """{side: (throughputs, latencies)} for the echo bot, loopbot on SQLite and (given a URL) on PostgreSQL."""
    from testkit.fake_telegram import FakeTelegram

    sides = {"echo": (lambda fake, tmp: _echo_bot(fake), False), "sqlite": (_loopbot, True)}
    if postgres_url:
        sides["postgres"] = (lambda fake, tmp: _loopbot(fake, tmp, postgres_url), True)
    results: dict[str, tuple[list[float], list[float]]] = {side: ([], []) for side in sides}
    first_user = 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ROUNDS):  # alternate, so a busy moment on a shared machine hits every side alike
            for side, (starter, buttons) in sides.items():
                fake = await FakeTelegram().start()  # a fresh server each time: its bookkeeping grows with traffic
                try:
                    stop = await starter(fake, tmp)
                    await _measure(fake, first_user, buttons)  # warm-up: the same users say hello first
                    tput, lat = await _measure(fake, first_user, buttons)  # returning users, as in a live bot
                    await stop()
                finally:
                    await fake.stop()
                first_user += 1_000_000
                results[side][0].append(tput)
                results[side][1].extend(lat)
    return results


def _rows(results: dict, side: str, label: str, ratio_goal: float, p99_goal_ms: float | None) -> list[dict]:
    echo_tput, echo_lat = statistics.median(results["echo"][0]), results["echo"][1]
    ours_tput, ours_lat = statistics.median(results[side][0]), results[side][1]
    added50 = _p(ours_lat, 50) - _p(echo_lat, 50)
    added99 = _p(ours_lat, 99) - _p(echo_lat, 99)
    rows = [
        {"name": f"telegram{label}: messages/s, burst of {BURST}, median of {ROUNDS} (loopbot vs bare PTB echo bot)",
         "figure": ours_tput, "baseline": echo_tput, "unit": "msg/s", "goal": f"ratio >= {ratio_goal}"},
        {"name": f"telegram{label}: p50 latency per message, ms (added {added50:.1f} ms)", "figure": _p(ours_lat, 50),
         "baseline": _p(echo_lat, 50), "unit": "ms", "goal": "added p50 informational", "met": None},
    ]
    if p99_goal_ms is not None:
        rows.append({"name": f"telegram{label}: p99 latency per message, ms (added {added99:.1f} ms)",
                     "figure": _p(ours_lat, 99), "baseline": _p(echo_lat, 99), "unit": "ms",
                     "goal": f"added p99 < {p99_goal_ms:g} ms", "met": added99 < p99_goal_ms})
    return rows


def run() -> list[dict]:
    import logging

    logging.getLogger("telegram").setLevel(logging.WARNING)
    from bench.postgres_proxied import proxied_postgres

    with proxied_postgres() as pg:
        results = asyncio.run(_run(pg.url))
    return [*_rows(results, "sqlite", " (SQLite)", 0.85, 15),
            *_rows(results, "postgres", f" (PostgreSQL +{pg.delay_ms:g} ms each way)", 0.7, None),
            {"name": "telegram: the PostgreSQL proxy's added SELECT 1 round trip, ms (vs direct)",
             "figure": pg.proxied_rtt_ms, "baseline": pg.direct_rtt_ms, "unit": "ms",
             "goal": f"added >= {2 * pg.delay_ms:g} ms", "met": pg.added_ms >= 2 * pg.delay_ms}]


if __name__ == "__main__":
    from bench.run_all import _rows_from, print_table

    print_table(_rows_from("bench_telegram", run(), 0.0))
