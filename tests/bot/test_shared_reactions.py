"""Two processes of one Discord bot share its reaction state through Redis ([shared] redis_url), or without Redis
through a PostgreSQL database: a 👍 seen by one and a 👎 seen by the other are one user changing their vote, and
removing the 👎 brings back the 👍 still on the message, whichever process sees it. Driven through
`DiscordBot.on_reaction` with gateway payloads (no gateway)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from loopbot.base.pg_state import PgState
from loopbot.bot.discord import DiscordBot
from loopbot.bot.messages import Incoming
from loopbot.storage.db import session_scope
from loopbot.storage.models import Feedback
from tests.bot.conftest import final, make_service

BOT_USER_ID = 999


def votes(engine) -> list[tuple[int, str]]:
    with session_scope(engine) as s:
        return [(f.value, f.source) for f in s.execute(select(Feedback).order_by(Feedback.id)).scalars()]


def process(sqlite_engine, settings) -> DiscordBot:
    """One bot process: its own ChatService and DiscordBot, as a second `loopbot run` would have."""
    bot = DiscordBot(make_service(sqlite_engine, settings), settings, token="not-used")
    bot.client = SimpleNamespace(user=SimpleNamespace(id=BOT_USER_ID))  # what on_reaction reads of the client
    return bot


def payload(emoji: str, message_id: int, user_id: int = 1) -> SimpleNamespace:
    return SimpleNamespace(user_id=user_id, message_id=message_id, channel_id=1, member=None,
                           emoji=SimpleNamespace(id=None, name=emoji))


async def _delivered_reply(bot: DiscordBot) -> int:
    inc = Incoming(platform="discord", chat_id="1", user_id="1", text="hi", user_name="alice", message_id="5")
    reply = (await final(bot.service, inc))[0]
    await bot.service.delivered(reply, "6")
    return 6


async def test_a_vote_changed_through_another_process_is_one_vote(sqlite_engine, settings, shared_redis):
    settings.shared = shared_redis
    a, b = process(sqlite_engine, settings), process(sqlite_engine, settings)
    message = await _delivered_reply(a)
    await a.on_reaction(payload("👍", message), added=True)
    assert votes(sqlite_engine) == [(1, "reaction")]
    await b.on_reaction(payload("👎", message), added=True)
    assert votes(sqlite_engine) == [(-1, "reaction")]  # changed, not a second vote
    await b.on_reaction(payload("👎", message), added=False)
    assert votes(sqlite_engine) == [(1, "reaction")]  # the 👍 seen by the other process is still on the message
    await a.on_reaction(payload("👍🏽", message), added=False)
    assert votes(sqlite_engine) == []
    assert a.errors == [] and b.errors == []
    await a._reactions.aclose()
    await b._reactions.aclose()


@pytest.mark.postgres
async def test_without_redis_a_vote_changed_through_another_process_is_one_vote_on_postgresql(
        sqlite_engine, settings, shared_postgres):
    settings.storage.url = shared_postgres  # the shared state's database ([shared] backend = "auto", no redis_url)
    a, b = process(sqlite_engine, settings), process(sqlite_engine, settings)
    assert isinstance(a._reactions, PgState)
    message = await _delivered_reply(a)
    await a.on_reaction(payload("👍", message), added=True)
    await b.on_reaction(payload("👎", message), added=True)
    assert votes(sqlite_engine) == [(-1, "reaction")]  # changed, not a second vote
    await b.on_reaction(payload("👎", message), added=False)
    assert votes(sqlite_engine) == [(1, "reaction")]  # the 👍 seen by the other process is still on the message
    await a.on_reaction(payload("👍", message), added=False)
    assert votes(sqlite_engine) == []
    assert a.errors == [] and b.errors == []


async def test_without_redis_the_reaction_state_stays_bounded_in_the_process(sqlite_engine, settings):
    bot = DiscordBot(make_service(sqlite_engine, settings), settings, token="not-used", max_reactions_tracked=5)
    bot.client = SimpleNamespace(user=SimpleNamespace(id=BOT_USER_ID))
    for message in range(20):
        await bot.on_reaction(payload("🎉", message), added=True)
    assert len(bot._reactions) == 5
