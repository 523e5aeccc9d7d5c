"""Starting the Discord bot: clear errors for what a person must fix, and staying up when the gateway drops."""

from __future__ import annotations

import asyncio
import random

import pytest

from loopbot.base.errors import ConfigError
from loopbot.bot.chat import ChatService
from loopbot.bot.discord import DiscordBot
from testkit.fake_discord import FakeDiscord
from testkit.instant_backend import InstantBackend
from testkit.router_from_database import router_from_database


def bot_for(fake, engine, settings, token=None) -> DiscordBot:
    s = settings.model_copy(deep=True)
    s.discord.api_base, s.discord.gateway_url = fake.api_base, fake.gateway_url
    service = ChatService(engine, s, router_from_database(engine, s, InstantBackend()), rng=random.Random(0))
    return DiscordBot(service, s, token=token or fake.token, guild_ready_timeout=0.05)


async def test_a_wrong_token_is_a_one_line_error_naming_the_variable(sqlite_engine, settings):
    fake = await FakeDiscord().start()
    try:
        with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
            await bot_for(fake, sqlite_engine, settings, token="not-the-token").start(timeout_s=10)
        assert fake.identify_count == 0
    finally:
        await fake.stop()


async def test_a_missing_message_content_intent_says_where_to_turn_it_on(sqlite_engine, settings):
    fake = await FakeDiscord(privileged_intents=False).start()
    try:
        with pytest.raises(ConfigError, match="Message Content Intent"):
            await bot_for(fake, sqlite_engine, settings).start(timeout_s=10)
    finally:
        await fake.stop()


def test_no_token_at_all_is_refused_before_connecting(sqlite_engine, settings, monkeypatch):
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    service = ChatService(sqlite_engine, settings, router_from_database(sqlite_engine, settings, InstantBackend()))
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
        DiscordBot(service, settings)


async def test_the_bot_resumes_after_the_gateway_drops_it(sqlite_engine, settings):
    fake = await FakeDiscord().start()
    bot = bot_for(fake, sqlite_engine, settings)
    try:
        await bot.start(timeout_s=10)
        await fake.drop_connections()
        alice = fake.user("alice")
        for _ in range(100):  # discord.py waits a random 0-2 s before resuming
            if fake.connections:
                break
            await asyncio.sleep(0.05)
        await fake.say(alice, "still there?", mention_bot=True)
        reply = await fake.wait_for_message(lambda m: bool(FakeDiscord.buttons(m)))
        assert reply["content"] == "[base] still there?"
        assert (fake.identify_count, fake.resumes) == (1, 1)  # resumed, not a new session
    finally:
        await bot.stop()
        await fake.stop()
    assert bot.errors == []
