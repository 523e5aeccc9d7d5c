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

SEQUENTIAL = 40
CONCURRENT = 60


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


async def _main() -> dict:
    from loopbot.base.config import load_settings
    from loopbot.bot.chat import ChatService
    from loopbot.bot.discord import DiscordBot
    from loopbot.storage.db import make_engine, upgrade
    from testkit.fake_discord import FakeDiscord
    from testkit.instant_backend import InstantBackend
    from testkit.router_from_database import router_from_database

    fake = await FakeDiscord().start()
    try:
        async with _echo_bot(fake):
            echo_lat, echo_rate = await _measure(fake, _replies_to)
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(ROOT / "config.toml", env={}, overrides={"data_dir": tmp})
            settings.feedback.arena_rate = 0.0
            settings.discord.api_base, settings.discord.gateway_url = fake.api_base, fake.gateway_url
            engine = make_engine(f"sqlite:///{tmp}/bench.db")
            upgrade(engine)
            router = router_from_database(engine, settings, InstantBackend())
            service = ChatService(engine, settings, router, rng=random.Random(0))
            bot = DiscordBot(service, settings, token=fake.token, guild_ready_timeout=0.05)
            await bot.start()
            try:
                bot_lat, bot_rate = await _measure(
                    fake, lambda m, a: _replies_to(m, a) and bool(FakeDiscord.buttons(m)))
            finally:
                await bot.stop()
                engine.dispose()
    finally:
        await fake.stop()
    return {"echo_lat": echo_lat, "echo_rate": echo_rate, "bot_lat": bot_lat, "bot_rate": bot_rate}


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run() -> list[dict]:
    m = asyncio.run(_main())
    return [
        {"name": f"discord: replies per second, {CONCURRENT} users at once (vs bare discord.py echo bot)",
         "figure": m["bot_rate"], "baseline": m["echo_rate"], "unit": "msg/s", "goal": "ratio >= 0.7"},
        {"name": "discord: reply latency p50, mention to final reply with buttons (vs echo bot)",
         "figure": _p(m["bot_lat"], 50), "baseline": _p(m["echo_lat"], 50), "unit": "ms"},
        {"name": "discord: reply latency p99 (vs echo bot); goal: added p99 < 20 ms",
         "figure": _p(m["bot_lat"], 99), "baseline": _p(m["echo_lat"], 99), "unit": "ms",
         "met": _p(m["bot_lat"], 99) - _p(m["echo_lat"], 99) < 20},
    ]


if __name__ == "__main__":
    for row in run():
        ratio = row["figure"] / row["baseline"]
        print(f"{row['name']}: {row['figure']:.1f} vs {row['baseline']:.1f} {row['unit']} ({ratio:.2f}x)")
