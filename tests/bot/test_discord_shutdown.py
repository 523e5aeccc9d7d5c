"""Stopping the Discord bot (SIGTERM under `loopbot run`) while replies stream: every half-written message gets a
final state, and nothing is logged as an error."""

from __future__ import annotations

import asyncio
import logging

from loopbot.app import Loopbot
from loopbot.runtime import serve_all
from testkit.fake_discord import FakeDiscord
from testkit.instant_backend import InstantBackend


async def test_stopping_while_replies_stream_gives_each_a_final_state_and_logs_no_error(settings, caplog):
    caplog.set_level(logging.DEBUG)
    fake = await FakeDiscord().start()
    try:
        s = settings.model_copy(deep=True)
        s.discord.api_base, s.discord.gateway_url = fake.api_base, fake.gateway_url
        s.discord.edit_interval_s = 0.05
        s.schedule.enabled = s.web.enabled = False
        loopbot = Loopbot(s)
        # two words, then a model that stalls for a minute: the replies are half-written when the stop comes
        loopbot.backend = InstantBackend(lambda m, a: "Start slowly and then keep going for a long time",
                                         chunk_chars=12, pauses={2: 60.0})
        stop = asyncio.Event()
        run = asyncio.create_task(serve_all(loopbot, stop=stop, env={s.discord.token_env: fake.token}))
        await fake.wait_until_connected(run)
        alice, bob = fake.user("alice"), fake.user("bob")
        await fake.say(alice, "tell me", mention_bot=True)
        await fake.say(bob, "and me", dm=True)
        for _ in range(200):  # both replies are on screen, half-written
            if len([m for m in fake.bot_messages() if m["content"].startswith("Start slowly")]) == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()  # what SIGTERM does under `loopbot run`
        assert "discord" in await asyncio.wait_for(run, 30)
        shown = fake.bot_messages()
        assert len(shown) == 2
        for message in shown:
            assert message["content"].startswith("Start slowly") and message["content"].endswith("(stopped)")
            assert [b["label"] for b in FakeDiscord.buttons(message)] == ["🔄 Try again"]  # works after a restart
            channel = f"/channels/{message['channel_id']}/"
            calls = [r for r in fake.requests if r[1].startswith(channel)]
            assert calls[-1][0] == "PATCH"  # the final state came last: no typing left dangling after it
        assert fake.connections == 0
        problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert problems == [], [(r.name, r.getMessage()) for r in problems]
    finally:
        await fake.stop()
