"""`loopbot run` with a Discord token in the environment serves Discord (against the loopback gateway)."""

from __future__ import annotations

import asyncio

from loopbot.app import Loopbot
from loopbot.runtime import serve_all
from testkit.fake_discord import FakeDiscord
from testkit.instant_backend import InstantBackend


async def test_loopbot_run_serves_discord_when_its_token_is_set(settings):
    fake = await FakeDiscord().start()
    try:
        s = settings.model_copy(deep=True)
        s.discord.api_base, s.discord.gateway_url = fake.api_base, fake.gateway_url
        s.schedule.enabled = s.web.enabled = False
        loopbot = Loopbot(s)
        loopbot.backend = InstantBackend()  # the configured backend would load a real model
        stop = asyncio.Event()
        run = asyncio.create_task(serve_all(loopbot, stop=stop, env={s.discord.token_env: fake.token}))
        await fake.wait_until_connected(run)  # raises if it stopped early, to show why
        alice = fake.user("alice")
        await fake.say(alice, "are you there?", mention_bot=True)
        # generous: on a loaded machine (a full test run beside two demos) the first reply took over 15 s
        reply = await fake.wait_for_message(lambda m: bool(FakeDiscord.buttons(m)), timeout=60)
        assert reply["content"] == "[base] are you there?"
        stop.set()
        assert "discord" in await asyncio.wait_for(run, 30)
        assert fake.connections == 0  # the gateway connection was closed on stop
    finally:
        await fake.stop()
