"""Several bot identities per platform in one process (`[[telegram.bots]]`, `[[discord.bots]]`): the real
python-telegram-bot and discord.py against the loopback servers, two Telegram bots (two tokens) and two Discord
applications sharing one chat core and database. Each answers as its own persona, votes land on that persona,
/forget from one bot removes the user's rows from both, and a fixed bot refuses /persona."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from loopbot.base.settings import BotSettings, TelegramBotSettings
from loopbot.bot.chat import ChatService
from loopbot.bot.discord import DiscordBot
from loopbot.bot.telegram import TelegramBot
from loopbot.storage.db import session_scope
from loopbot.storage.models import Chat, Feedback, Generation, Message, User
from testkit.fake_discord import FakeDiscord
from testkit.fake_telegram import FakeTelegram
from testkit.instant_backend import InstantBackend
from testkit.router_from_database import router_from_database


def rows(engine, model):
    with session_scope(engine) as s:
        return list(s.execute(select(model).order_by(model.id)).scalars())


def persona_backend(settings) -> InstantBackend:
    """Answers "<persona> says <last user message>", the persona read from the system prompt it was given."""
    by_prompt = {p.system_prompt: name for name, p in settings.personas.items()}

    def script(messages, adapter):
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return f"{by_prompt.get(messages[0]['content'], '?')} says {last}"

    return InstantBackend(script)


async def answer(fake: FakeTelegram, chat_id: int, after: int):
    """The first bot message in the chat after message `after` (a command's answer carries no buttons)."""
    return (await fake.wait_for(lambda: [m for m in fake.bot_messages(chat_id) if m.message_id > after]))[0]


def service_for(engine, s) -> ChatService:
    return ChatService(engine, s, router_from_database(engine, s, persona_backend(s)), rng=random.Random(0))


@pytest.fixture
async def telegram_pair(sqlite_engine, settings):
    """Two Telegram bots (coach fixed, comedian switchable) on two loopback Bot API servers, one ChatService."""
    fakes = [await FakeTelegram(token=f"{n}11:coach-token" if n == 1 else f"{n}22:comedy-token").start()
             for n in (1, 2)]
    s = settings.model_copy(deep=True)
    s.feedback.arena_rate = 0.0
    s.telegram.edit_interval_s = 0.05
    s.telegram.bots = [TelegramBotSettings(name="coachbot", token_env="TG_COACH", persona="coach"),
                       TelegramBotSettings(name="comedybot", token_env="TG_COMEDY", persona="comedian",
                                           switchable=True)]
    service = service_for(sqlite_engine, s)
    bots = []
    for fake, served in zip(fakes, s.bots("telegram"), strict=True):
        section = s.telegram.model_copy(update={"base_url": fake.base_url, "base_file_url": fake.base_file_url})
        bot = TelegramBot(service, section, fake.token, poll_timeout_s=5, bot=served)
        await bot.start()
        bots.append(bot)
    yield fakes, service
    for bot in bots:
        await bot.stop()
    for fake in fakes:
        await fake.stop()


async def test_two_telegram_bots_answer_as_their_personas_and_forget_spans_both(telegram_pair, sqlite_engine):
    (coach, comedy), _ = telegram_pair
    # one user, the same private chat id (42) with both bots; one after the other: the bots share the rate
    # limits (one reply at a time per user, access.concurrent_generations)
    coach.send("hi", user_id=42)
    a = await coach.final_reply(42)
    comedy.send("hi", user_id=42)
    b = await comedy.final_reply(42)
    assert (a.text, b.text) == ("coach says hi", "comedian says hi")
    chats = rows(sqlite_engine, Chat)
    assert sorted((c.bot, c.platform_chat_id) for c in chats) == [("coachbot", "42"), ("comedybot", "42")]
    assert [(u.platform, u.platform_user_id) for u in rows(sqlite_engine, User)] == [("telegram", "42")]

    q1, q2 = coach.press(a, a.data("👍")), comedy.press(b, b.data("👎"))
    await coach.wait_for(lambda: q1 in coach.callback_answers)
    await comedy.wait_for(lambda: q2 in comedy.callback_answers)
    gens = {g.id: g.persona for g in rows(sqlite_engine, Generation)}
    assert sorted((gens[f.generation_id], f.value) for f in rows(sqlite_engine, Feedback)) == [
        ("coach", 1), ("comedian", -1)]

    coach.send("/persona clone", user_id=42)  # the coach bot is fixed
    refused = await answer(coach, 42, a.message_id)
    assert "always talks as" in refused.text and "cannot switch" in refused.text
    comedy.send("/persona clone", user_id=42)  # the comedian bot is switchable: only its chat changes
    switched = await answer(comedy, 42, b.message_id)
    assert "Now talking as" in switched.text
    coach.send("again", user_id=42)
    assert (await coach.final_reply(42, after=refused.message_id)).text == "coach says again"
    comedy.send("again", user_id=42)
    again = await comedy.final_reply(42, after=switched.message_id)
    assert again.text == "clone says again"

    comedy.send("/forget", user_id=42)
    ask = await comedy.final_reply(42, after=again.message_id)
    assert "cannot be undone" in ask.text
    comedy.press(ask, ask.data("🗑"))
    await comedy.wait_for(lambda: ask.text.startswith("Done: deleted"))
    assert rows(sqlite_engine, Message) == [] and rows(sqlite_engine, Generation) == []
    assert rows(sqlite_engine, Feedback) == []


@pytest.fixture
async def discord_pair(sqlite_engine, settings):
    """Two Discord applications (coach, comedian; both fixed) in one loopback guild, one ChatService."""
    fake = await FakeDiscord(token="coach-discord-token").start()
    comedy_app = fake.add_app("comedy-discord-token", "comedybot")
    s = settings.model_copy(deep=True)
    s.feedback.arena_rate = 0.0
    s.discord.api_base, s.discord.gateway_url = fake.api_base, fake.gateway_url
    s.discord.edit_interval_s = 0.05
    s.discord.bots = [BotSettings(name="coachbot", token_env="DC_COACH", persona="coach"),
                      BotSettings(name="comedybot", token_env="DC_COMEDY", persona="comedian")]
    service = service_for(sqlite_engine, s)
    bots = []
    for token, served in zip((fake.token, comedy_app.token), s.bots("discord"), strict=True):
        bot = DiscordBot(service, s, token=token, guild_ready_timeout=0.05, bot=served)
        await bot.start(timeout_s=15)
        bots.append(bot)
    yield fake, comedy_app
    for bot in reversed(bots):
        await bot.stop()
    await fake.stop()
    assert [repr(e) for bot in bots for e in bot.errors] == []


async def test_two_discord_applications_answer_as_their_personas_and_forget_spans_both(discord_pair, sqlite_engine):
    fake, comedy_app = discord_pair
    coach_app = fake.primary
    assert {c["name"] for c in coach_app.global_commands} >= {"help", "forget"}  # registered per application
    assert {c["name"] for c in comedy_app.global_commands} >= {"help", "forget"}
    assert {c["application_id"] for c in comedy_app.global_commands} == {str(comedy_app.application_id)}
    alice = fake.user("alice")

    def reply_by(app):
        return lambda m: int(m["author"]["id"]) == app.bot_user.id and FakeDiscord.buttons(m)

    await fake.say(alice, "hola", mention_bot=True, bot=coach_app)
    a = await fake.wait_for_message(reply_by(coach_app))
    await fake.say(alice, "hola", mention_bot=True, bot=comedy_app)
    b = await fake.wait_for_message(reply_by(comedy_app))
    assert (a["content"], b["content"]) == ("coach says hola", "comedian says hola")
    chats = rows(sqlite_engine, Chat)  # one guild channel, two conversations
    assert sorted(c.bot for c in chats) == ["coachbot", "comedybot"] and len({c.platform_chat_id for c in chats}) == 1
    assert len(rows(sqlite_engine, User)) == 1

    await fake.wait_answered(await fake.press(alice, a, label="👍"))
    await fake.wait_answered(await fake.press(alice, b, label="👎"))
    gens = {g.id: g.persona for g in rows(sqlite_engine, Generation)}
    assert sorted((gens[f.generation_id], f.value) for f in rows(sqlite_engine, Feedback)) == [
        ("coach", 1), ("comedian", -1)]

    fixed = await fake.response_of(await fake.slash(alice, "persona", {"name": "clone"}, app=comedy_app))
    assert "always talks as" in fixed["content"] and int(fixed["author"]["id"]) == comedy_app.bot_user.id

    ask = await fake.response_of(await fake.slash(alice, "forget", app=coach_app))
    await fake.wait_answered(await fake.press(alice, ask, label="🗑 Yes, delete everything"))
    assert fake.messages[int(ask["id"])]["content"].startswith("Done: deleted")
    assert rows(sqlite_engine, Message) == [] and rows(sqlite_engine, Generation) == []
    assert rows(sqlite_engine, Feedback) == []


async def test_two_telegram_bots_by_webhook_each_with_its_own_path_port_and_secret(sqlite_engine, settings):
    from aiohttp import ClientSession

    from testkit.ports import free_port

    fakes = [await FakeTelegram(token=t).start() for t in ("111:coach-token", "222:comedy-token")]
    ports = [free_port(), free_port()]
    s = settings.model_copy(deep=True)
    s.feedback.arena_rate = 0.0
    s.telegram.mode, s.telegram.edit_interval_s = "webhook", 0.05
    s.telegram.webhook_url = "http://127.0.0.1/unused"
    s.telegram.bots = [TelegramBotSettings(name=n, token_env=f"TG_{n.upper()}", persona=p, webhook_port=port,
                                           webhook_url=f"http://127.0.0.1:{port}/tg/{n}")
                       for n, p, port in (("coachbot", "coach", ports[0]), ("comedybot", "comedian", ports[1]))]
    service = service_for(sqlite_engine, s)
    bots = []
    try:
        for fake, served, secret in zip(fakes, s.bots("telegram"), ("secret-a", "secret-b"), strict=True):
            section = s.telegram.model_copy(update={"base_url": fake.base_url, "base_file_url": fake.base_file_url})
            bot = TelegramBot(service, section, fake.token, webhook_secret=secret, poll_timeout_s=5, bot=served)
            await bot.start()
            bots.append(bot)
        assert [(f.webhook["url"], f.webhook["secret_token"]) for f in fakes] == [
            (f"http://127.0.0.1:{ports[0]}/tg/coachbot", "secret-a"),
            (f"http://127.0.0.1:{ports[1]}/tg/comedybot", "secret-b")]
        for fake, persona in zip(fakes, ("coach", "comedian"), strict=True):
            fake.send("hi", user_id=7)
            assert (await fake.final_reply(7)).text == f"{persona} says hi"
        async with ClientSession() as session, session.post(  # bot B's path does not take bot A's secret
                f"http://127.0.0.1:{ports[1]}/tg/comedybot", json={"update_id": 99, "message": {}},
                headers={"X-Telegram-Bot-Api-Secret-Token": "secret-a"}) as resp:
            assert resp.status == 403
    finally:
        for bot in bots:
            await bot.stop()
        for fake in fakes:
            await fake.stop()
