"""Discord sharding: `[discord] shard_count` / `shard_ids` reach the gateway's IDENTIFY, and a guild's events go
to the process that runs its shard, (guild_id >> 22) % shard_count."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loopbot.base.settings import DiscordBotSettings, DiscordSettings
from loopbot.bot.discord import DiscordBot
from testkit.fake_discord import FakeDiscord
from tests.bot.conftest import make_service

GUILD = (123456 << 22) | 77  # on shard 0 of 2


async def test_two_processes_with_one_shard_each_identify_with_it_and_the_guild_goes_to_its_shard(sqlite_engine,
                                                                                                  settings):
    fake = await FakeDiscord(guild_id=GUILD).start()
    bots = []
    try:
        for shard in (0, 1):  # two "processes": one DiscordBot each, shard_ids = [shard] of 2
            s = settings.model_copy(deep=True)
            s.discord.api_base, s.discord.gateway_url = fake.api_base, fake.gateway_url
            s.discord.shard_count, s.discord.shard_ids = 2, [shard]
            bot = DiscordBot(make_service(sqlite_engine, s), s, fake.token)
            await bot.start()
            bots.append(bot)
        assert sorted(fake.shards) == [(0, 2), (1, 2)]
        assert [(b.client.shard_id, b.client.shard_count) for b in bots] == [(0, 2), (1, 2)]
        assert bots[0].client.get_guild(GUILD) is not None and bots[1].client.get_guild(GUILD) is None
        await fake.say(fake.user("alice"), "hello shards", mention_bot=True)
        reply = await fake.wait_for_message(lambda m: bool(FakeDiscord.buttons(m)), timeout=30)
        assert reply["content"] == "[base] hello shards"
        assert len([m for m in fake.bot_messages() if m.get("content", "").startswith("[base]")]) == 1
    finally:
        for bot in reversed(bots):
            await bot.stop()
        await fake.stop()


def test_a_bot_entry_has_its_own_shards_else_the_sections(settings):
    s = settings.model_copy(deep=True)
    s.discord.shard_count, s.discord.shard_ids = 4, [2, 3]
    s.discord.bots = [DiscordBotSettings(name="a", token_env="A"),
                      DiscordBotSettings(name="b", token_env="B", shard_count=2, shard_ids=[1])]
    a, b = s.bots("discord")
    assert (a.shard_count, a.shard_ids) == (4, (2, 3)) and (b.shard_count, b.shard_ids) == (2, (1,))


@pytest.mark.parametrize(("kw", "error"), [
    ({"shard_count": 2, "shard_ids": [2]}, "discord.shard_ids [2] outside 0..1"),
    ({"shard_ids": [0]}, "needs discord.shard_count"),
    ({"shard_count": 0}, "greater than or equal to 1"),
    ({"shard_count": 2, "shard_ids": [1, 1]}, "lists a shard twice"),
])
def test_shard_settings_are_checked(kw, error):
    with pytest.raises(ValidationError, match=error.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        DiscordSettings(**kw)
