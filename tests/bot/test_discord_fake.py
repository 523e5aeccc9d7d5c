"""The loopback Discord server is as strict as Discord where our bot could go wrong; checked with a bare
discord.py client, so a lax fake cannot make the bot's tests pass."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import discord
import pytest
import yarl

from testkit.fake_discord import FakeDiscord


@contextlib.asynccontextmanager
async def bare_client(fake: FakeDiscord, *, message_content: bool = True, handlers: dict | None = None):
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    intents = discord.Intents.default()
    intents.message_content = message_content
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    for name, handler in (handlers or {}).items():
        setattr(client, name, handler)
    try:
        await client.login(fake.token)
        task = asyncio.create_task(client.connect(reconnect=False))
        await asyncio.wait_for(client.wait_until_ready(), 10)
        yield client
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await task
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


@pytest.fixture
async def fake():
    server = await FakeDiscord().start()
    yield server
    await server.stop()


async def test_messages_over_2000_characters_and_empty_ones_are_refused(fake):
    async with bare_client(fake) as client:
        channel = client.get_channel(fake.channel_id)
        with pytest.raises(discord.HTTPException) as error:
            await channel.send("x" * 2001)
        assert error.value.status == 400 and error.value.code == 50035
        with pytest.raises(discord.HTTPException, match="empty message"):
            await channel.send("")
        sent = await channel.send("x" * 2000)
        with pytest.raises(discord.HTTPException):
            await sent.edit(content="y" * 2001)
        assert fake.messages[sent.id]["content"] == "x" * 2000


async def test_an_interaction_is_answered_once_and_only_in_time(fake):
    outcomes = []

    async def on_interaction(interaction: discord.Interaction):
        if interaction.data["custom_id"] == "late":
            await asyncio.sleep(0.3)
        try:
            await interaction.response.send_message("first")
            await interaction.followup.send("a follow-up is fine")
            outcomes.append("ok")
        except discord.HTTPException as e:
            outcomes.append(e.code)

    fake.interaction_deadline_s = 0.2
    async with bare_client(fake, handlers={"on_interaction": on_interaction}) as client:
        msg = await client.get_channel(fake.channel_id).send("buttons", view=_view("now", "late"))
        alice = fake.user("alice")
        now = await fake.wait_answered(await fake.press(alice, fake.messages[msg.id], "now"))
        await fake.press(alice, fake.messages[msg.id], "late")
        for _ in range(100):
            if len(outcomes) == 2:
                break
            await asyncio.sleep(0.02)
        async with aiohttp.ClientSession() as http:  # a second response, past discord.py's own guard
            url = f"{fake.api_base}/interactions/{now.id}/{now.token}/callback"
            async with http.post(url, json={"type": 4, "data": {"content": "again"}}) as r:
                again = (r.status, (await r.json())["code"])
    assert outcomes == ["ok", 10062]  # the late one: "Unknown interaction"
    assert again == (400, 40060)  # "Interaction has already been acknowledged."
    assert [m["content"] for m in now.followups] == ["a follow-up is fine"]


async def test_message_content_is_blank_without_the_intent_unless_mentioned_or_a_dm(fake):
    seen = {}

    async def on_message(message: discord.Message):
        seen[message.id] = message.content

    async with bare_client(fake, message_content=False, handlers={"on_message": on_message}):
        alice = fake.user("alice")
        plain = await fake.say(alice, "hello all")
        mention = await fake.say(alice, "hello bot", mention_bot=True)
        dm = await fake.say(alice, "hello in private", dm=True)
        for _ in range(100):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
    assert seen[int(plain["id"])] == ""
    assert seen[int(mention["id"])].endswith("hello bot") and seen[int(dm["id"])] == "hello in private"


def _view(*custom_ids: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for cid in custom_ids:
        view.add_item(discord.ui.Button(label=cid, custom_id=cid))
    return view
