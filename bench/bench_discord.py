"""The Discord bot's own overhead: mentions through the real discord.py path against the loopback Discord server
with an instant backend (so only the bot is measured), against a bare discord.py echo bot on the same server in
the same run. Latency is one message at a time; throughput is many users at once."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEQUENTIAL = 60
CONCURRENT = 100
ROUNDS = 3


async def _measure(fake, is_answer) -> tuple[list[float], float]:
    """(latencies in ms one at a time, messages per second with CONCURRENT users at once)."""
    latencies = []
    for i in range(SEQUENTIAL):
        user = fake.user(f"seq{i}")
        start = time.perf_counter()
        asked = await fake.say(user, f"question {i}", mention_bot=True)
        await fake.wait_for_message(lambda m, a=asked: is_answer(m, a), timeout=30)
        latencies.append((time.perf_counter() - start) * 1000)
    users = [fake.user(f"par{i}") for i in range(CONCURRENT)]
    start = time.perf_counter()
    asked = [await fake.say(u, f"at once {i}", mention_bot=True) for i, u in enumerate(users)]
    await asyncio.gather(*(fake.wait_for_message(lambda m, a=a: is_answer(m, a), timeout=60) for a in asked))
    return latencies, CONCURRENT / (time.perf_counter() - start)


def _replies_to(message: dict, asked: dict) -> bool:
    return (message.get("message_reference") or {}).get("message_id") == asked["id"]


@contextlib.asynccontextmanager
async def _echo_bot(fake):
    """The baseline: a bare discord.py client that replies with the text it got."""
    import discord
    import yarl

    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    intents = discord.Intents.default()
    intents.message_content = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05,
                            allowed_mentions=discord.AllowedMentions.none())

    async def on_message(message):
        if not message.author.bot and client.user in message.mentions:
            await message.reply(message.content, mention_author=False)

    client.on_message = on_message
    await client.login(fake.token)
    task = asyncio.create_task(client.connect(reconnect=False))
    await client.wait_until_ready()
    try:
        yield client
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await task
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


@contextlib.asynccontextmanager
async def _loopbot(fake, tmp: str, database_url: str | None = None):
    """loopbot's Discord bot over the instant backend, on SQLite in `tmp` or on `database_url` (migrated)."""
    from loopbot.base.config import load_settings
    from loopbot.bot.chat import ChatService
    from loopbot.bot.discord import DiscordBot
    from loopbot.storage.db import make_engine, upgrade
    from testkit.instant_backend import InstantBackend
    from testkit.router_from_database import router_from_database

    settings = load_settings(ROOT / "config.toml", env={}, overrides={"data_dir": tmp})
    settings.feedback.arena_rate = 0.0
    settings.access.messages_per_minute = 1_000_000
    settings.discord.api_base, settings.discord.gateway_url = fake.api_base, fake.gateway_url
    engine = make_engine(database_url or f"sqlite:///{tmp}/bench.db")
    if database_url is None:
        upgrade(engine)
    router = router_from_database(engine, settings, InstantBackend())
    bot = DiscordBot(ChatService(engine, settings, router, rng=random.Random(0)), settings, token=fake.token,
                     guild_ready_timeout=0.05)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()
        engine.dispose()


def _with_buttons(message: dict, asked: dict) -> bool:
    from testkit.fake_discord import FakeDiscord

    return _replies_to(message, asked) and bool(FakeDiscord.buttons(message))


async def _main(postgres_url: str | None) -> dict[str, tuple[list[float], list[float]]]:
    """{side: (replies per second of each round, latencies)}: the echo bot, loopbot on SQLite and on PostgreSQL."""
    from testkit.fake_discord import FakeDiscord

    sides = {"echo": (lambda fake, tmp: _echo_bot(fake), _replies_to),
             "sqlite": (lambda fake, tmp: _loopbot(fake, tmp), _with_buttons)}
    if postgres_url:
        sides["postgres"] = (lambda fake, tmp: _loopbot(fake, tmp, postgres_url), _with_buttons)
    results: dict[str, tuple[list[float], list[float]]] = {side: ([], []) for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ROUNDS):  # alternate, so a busy moment on a shared machine hits every side alike
            for side, (bot, is_answer) in sides.items():
                fake = await FakeDiscord().start()  # a fresh server each time: its bookkeeping grows with traffic
                try:
                    async with bot(fake, tmp):
                        latencies, rate = await _measure(fake, is_answer)
                finally:
                    await fake.stop()
                results[side][0].append(rate)
                results[side][1].extend(latencies)
    return results


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _rows(results: dict, side: str, label: str, p99_goal_ms: float | None) -> list[dict]:
    echo_rate, echo_lat = statistics.median(results["echo"][0]), results["echo"][1]
    rate, lat = statistics.median(results[side][0]), results[side][1]
    added99 = _p(lat, 99) - _p(echo_lat, 99)
    rows = [
        {"name": f"discord{label}: replies per second, {CONCURRENT} new users at once, median of {ROUNDS} "
                 "(vs bare discord.py echo bot)",
         "figure": rate, "baseline": echo_rate, "unit": "msg/s", "goal": "ratio >= 0.7"},
        {"name": f"discord{label}: reply latency p50, mention to final reply with buttons (vs echo bot)",
         "figure": _p(lat, 50), "baseline": _p(echo_lat, 50), "unit": "ms"},
    ]
    if p99_goal_ms is not None:
        rows.append({"name": f"discord{label}: reply latency p99, added {added99:.1f} ms (vs echo bot)",
                     "figure": _p(lat, 99), "baseline": _p(echo_lat, 99), "unit": "ms",
                     "goal": f"added p99 < {p99_goal_ms:g} ms", "met": added99 < p99_goal_ms})
    return rows


def run() -> list[dict]:
    from bench.postgres_proxied import proxied_postgres

    with proxied_postgres() as pg:
        results = asyncio.run(_main(pg.url))
    return [*_rows(results, "sqlite", " (SQLite)", 20),
            *_rows(results, "postgres", f" (PostgreSQL +{pg.delay_ms:g} ms each way)", None)]


if __name__ == "__main__":
    from bench.run_all import _rows_from, print_table

    print_table(_rows_from("bench_discord", run(), 0.0))
