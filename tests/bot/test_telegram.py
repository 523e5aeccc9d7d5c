"""The real python-telegram-bot Application against a strict loopback Bot API: what a Telegram user sees."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from aiohttp import ClientSession
from sqlalchemy import select

from loopbot.bot.chat import ChatService
from loopbot.bot.telegram import TelegramBot
from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Comparison, Feedback, Generation, Message
from testkit.fake_telegram import TOKEN, FakeTelegram
from testkit.instant_backend import InstantBackend
from testkit.ports import free_port
from testkit.router_from_database import router_from_database


def rows(engine, model):
    with session_scope(engine) as s:
        return list(s.execute(select(model).order_by(model.id)).scalars())


@pytest.fixture
async def fake():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


@pytest.fixture
async def start_bot(fake, sqlite_engine, settings):
    """start_bot(backend=..., arena_rate=..., mode=..., **access) -> the running TelegramBot."""
    bots = []

    async def start(backend=None, *, arena_rate=0.0, edit_interval_s=0.05, mode="polling", secret=None,
                    webhook_url=None, **access):
        s = settings.model_copy(deep=True)
        s.feedback.arena_rate = arena_rate
        s.telegram.base_url, s.telegram.base_file_url = fake.base_url, fake.base_file_url
        s.telegram.edit_interval_s, s.telegram.mode = edit_interval_s, mode
        if webhook_url:
            s.telegram.webhook_url = webhook_url
            s.telegram.webhook_port = int(webhook_url.rsplit(":", 1)[1].split("/")[0])
        for key, value in access.items():
            setattr(s.access, key, value)
        service = ChatService(sqlite_engine, s, router_from_database(sqlite_engine, s, backend or InstantBackend()),
                              rng=random.Random(0))
        bot = TelegramBot(service, s.telegram, TOKEN, webhook_secret=secret, poll_timeout_s=5)
        await bot.start()
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        await bot.stop()


async def test_start_answers_with_help_and_sets_the_command_menu(fake, start_bot):
    await start_bot()
    fake.send("/start", user_id=7)
    reply = await fake.wait_for(lambda: fake.bot_messages(7))
    assert "Rate every answer with 👍 or 👎" in reply[0].text and "/consent" in reply[0].text
    assert "/train" not in reply[0].text  # not an admin
    assert {c["command"] for c in fake.commands} >= {"start", "help", "persona", "forget", "arena"}
    assert "train" not in {c["command"] for c in fake.commands}


async def test_a_reply_streams_by_throttled_edits_and_ends_with_buttons(fake, start_bot, sqlite_engine):
    text = "Run easy most days and keep the long run conversational. " * 3
    await start_bot(InstantBackend(lambda m, a: text, chunk_chars=6, delay_s=0.02), edit_interval_s=0.1)
    fake.send("How should I train?", user_id=1)
    reply = await fake.final_reply(1)
    assert reply.text == text.strip() or reply.text == text
    assert [label for row in reply.buttons for label, _ in row] == ["👍", "👎", "🔄"]
    assert 2 <= len(reply.history) <= 12  # streamed, but nowhere near one edit per chunk (29 chunks)
    assert not any(name.endswith("!400") for name, _ in fake.calls)  # the fake refuses an identical edit
    def stored_with_ids():  # the reply's platform id is written just after its final edit: wait for both rows
        found = [m for m in rows(sqlite_engine, Message) if m.platform_message_id]
        return found if len(found) >= 2 else None

    stored = await fake.wait_for(stored_with_ids)
    assert [(m.role, m.platform_message_id) for m in stored] == [("user", "1"), ("assistant", str(reply.message_id))]
    assert rows(sqlite_engine, Generation)[0].status == "ok"


async def test_a_long_reply_is_split_at_4096(fake, start_bot):
    long = " ".join(f"{i:03d}" + "a" * 96 for i in range(170))  # 170 words of 99 characters: 16,999
    await start_bot(InstantBackend(lambda m, a: long, chunk_chars=4000))
    fake.send("tell me everything", user_id=2)
    await fake.final_reply(2)
    parts = fake.bot_messages(2)
    assert len(parts) == 5 and all(len(p.text) <= 4096 for p in parts)
    assert " ".join(p.text for p in parts).split() == long.split()
    assert [bool(p.reply_markup) for p in parts] == [False] * 4 + [True]


async def test_vote_then_change_keeps_one_vote(fake, start_bot, sqlite_engine):
    await start_bot()
    fake.send("hi", user_id=3)
    reply = await fake.final_reply(3)
    q1 = fake.press(reply, reply.data("👍"))
    await fake.wait_for(lambda: q1 in fake.callback_answers)
    q2 = fake.press(reply, reply.data("👎"))
    await fake.wait_for(lambda: q2 in fake.callback_answers)
    assert fake.callback_answers[q1]["text"].startswith("Thanks! 👍")
    await fake.wait_for(lambda: reply.buttons[0][1][0] == "👎 1")
    assert [(v.value, v.source) for v in rows(sqlite_engine, Feedback)] == [(-1, "button")]


async def test_retry_sends_another_answer_stored_as_a_retry(fake, start_bot, sqlite_engine):
    answers = iter(["first try", "second try"])
    await start_bot(InstantBackend(lambda m, a: next(answers)))
    fake.send("question", user_id=4)
    first = await fake.final_reply(4)
    q = fake.press(first, first.data("🔄"))
    second = await fake.final_reply(4, after=first.message_id)
    assert second.text == "second try" and fake.callback_answers[q]["text"] == "Trying again…"
    gens = rows(sqlite_engine, Generation)
    assert gens[1].retry_of_id == gens[0].id


async def test_arena_round_and_pick(fake, start_bot, sqlite_engine):
    backend = InstantBackend()
    await backend.load_adapter("coach-v1", "/x")
    crud.create_adapter(sqlite_engine, persona="coach", version=1, base_model="smollm2", path="/x")
    crud.activate_adapter(sqlite_engine, persona="coach", version=1)
    await start_bot(backend, arena_rate=1.0)
    fake.send("which is better?", user_id=5)
    reply = await fake.final_reply(5)
    assert "🅰️ A" in reply.text and "🅱️ B" in reply.text and "[coach-v1] which is better?" in reply.text
    q = fake.press(reply, reply.data("🅱️"))
    await fake.wait_for(lambda: q in fake.callback_answers)
    await fake.wait_for(lambda: reply.buttons and reply.buttons[0][0][0] == "👍")
    assert rows(sqlite_engine, Comparison)[0].pick == "b"


async def test_forget_asks_then_deletes(fake, start_bot, sqlite_engine):
    await start_bot()
    fake.send("remember this", user_id=6)
    await fake.final_reply(6)
    fake.send("/forget", user_id=6)
    ask = await fake.final_reply(6, after=fake.bot_messages(6)[0].message_id)
    assert "cannot be undone" in ask.text
    fake.press(ask, ask.data("🗑"))
    await fake.wait_for(lambda: ask.text.startswith("Done: deleted 2 messages (yours and my 1 replies"))
    assert ask.reply_markup is None
    assert rows(sqlite_engine, Message) == [] and rows(sqlite_engine, Generation) == []


async def test_a_forged_callback_is_answered_expired_and_ignored(fake, start_bot, sqlite_engine):
    await start_bot()
    fake.send("mine", user_id=8)
    victim = await fake.final_reply(8)
    fake.send("mine too", user_id=9)
    own = await fake.final_reply(9)
    q = fake.press(own, victim.data("👍"), user_id=9)  # user 9 forges a vote on user 8's reply
    await fake.wait_for(lambda: q in fake.callback_answers)
    assert fake.callback_answers[q]["text"] == "This button has expired."
    q2 = fake.press(own, "v:1:+1:extra", user_id=9)
    await fake.wait_for(lambda: q2 in fake.callback_answers)
    assert fake.callback_answers[q2]["text"] == "This button has expired."
    assert rows(sqlite_engine, Feedback) == []


async def test_429_retry_after_is_honoured(fake, start_bot):
    await start_bot()
    fake.fail_next("sendMessage", retry_after=1)
    started = time.monotonic()
    fake.send("hello", user_id=10)
    reply = await fake.final_reply(10, timeout=15)
    assert time.monotonic() - started >= 1.0, [n for n, _ in fake.calls]
    names = [name for name, _ in fake.calls if name.startswith("sendMessage")]
    assert names == ["sendMessage!429", "sendMessage"] and reply.text == "[base] hello"


async def test_a_user_over_the_rate_limit_is_told_politely(fake, start_bot, sqlite_engine):
    await start_bot(messages_per_minute=2)
    for i in range(3):
        fake.send(f"message {i}", user_id=11)
        await fake.wait_for(lambda i=i: len(fake.bot_messages(11)) == i + 1)
    last = fake.bot_messages(11)[-1]
    assert "faster than I can answer (2 a minute)" in last.text and not last.reply_markup
    assert len([m for m in rows(sqlite_engine, Message) if m.role == "user"]) == 3  # the refused one is kept too


async def test_reactions_stickers_unknown_commands_and_groups(fake, start_bot, sqlite_engine):
    await start_bot()
    fake.send("hi", user_id=12)
    reply = await fake.final_reply(12)
    fake.react(reply, ["👍"], user_id=12)
    await fake.wait_for(lambda: rows(sqlite_engine, Feedback))
    assert [(v.value, v.source) for v in rows(sqlite_engine, Feedback)] == [(1, "reaction")]

    fake.send(None, user_id=13, sticker={"file_id": "s", "file_unique_id": "s", "width": 1, "height": 1,
                                         "is_animated": False, "is_video": False, "type": "regular"})
    sticker = await fake.wait_for(lambda: fake.bot_messages(13))
    assert "can't see that sticker" in sticker[0].text
    fake.send("/dance", user_id=14)
    unknown = await fake.wait_for(lambda: fake.bot_messages(14))
    assert unknown[0].text == "I don't know the command /dance. Send /help to see what I can do."

    fake.send("just chatting", user_id=15, chat_id=-100, chat_type="group")
    fake.send("@loopbot_test_bot what about hills?", user_id=15, chat_id=-100, chat_type="group")
    answer = await fake.final_reply(-100)
    assert answer.text == "[base] what about hills?" and answer.reply_to is not None  # the mention is not in the prompt
    assert len(fake.bot_messages(-100)) == 1
    await fake.wait_for(lambda: any(m.platform_message_id == str(answer.message_id)
                                    for m in rows(sqlite_engine, Message)))
    fake.send("and downhill?", user_id=16, chat_id=-100, chat_type="group", reply_to=answer.message_id)
    follow_up = await fake.final_reply(-100, after=answer.message_id)
    assert follow_up.text == "[base] and downhill?"
    prompt = rows(sqlite_engine, Generation)[-1].prompt
    assert [m["content"] for m in prompt[1:]] == ["what about hills?", "[base] what about hills?", "and downhill?"]


async def test_formatting_falls_back_to_plain_text(fake, start_bot):
    await start_bot(InstantBackend(lambda m, a: "Run **easy** <today>", chunk_chars=100))
    fake.send("a", user_id=16)
    formatted = await fake.final_reply(16)
    assert formatted.text == "Run easy <today>" and formatted.parse_mode == "HTML"
    fake.refuse_entities = True
    fake.send("b", user_id=17)
    plain = await fake.final_reply(17)
    assert plain.text == "Run **easy** <today>" and plain.parse_mode is None


async def test_webhook_mode_with_a_secret_token(fake, start_bot):
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    await start_bot(mode="webhook", secret="s3cret", webhook_url=url)
    assert fake.webhook == {"url": url, "secret_token": "s3cret",
                            "allowed_updates": ["message", "callback_query", "message_reaction"]}
    fake.send("/help", user_id=18)
    reply = await fake.wait_for(lambda: fake.bot_messages(18))
    assert "Rate every answer" in reply[0].text
    async with ClientSession() as session, session.post(url, json={"update_id": 99, "message": {}},
                            headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
        assert resp.status == 403


async def test_a_slow_reply_does_not_block_other_chats(fake, start_bot):
    def delay(messages):
        return 0.3 if "slow" in messages[-1]["content"] else 0.0

    await start_bot(InstantBackend(lambda m, a: "one two three four five six", chunk_chars=4, delay_s=delay))
    fake.send("a slow one please", user_id=20)
    await fake.wait_for(lambda: fake.bot_messages(20))  # the slow reply is under way (6 chunks, 0.3 s apart)
    fake.send("quick?", user_id=21)
    await fake.final_reply(21, timeout=5)
    assert not any(m.reply_markup for m in fake.bot_messages(20))  # the slow one is still streaming
    await fake.final_reply(20, timeout=15)


async def test_text_held_back_by_the_interval_is_shown_while_the_model_stalls(fake, start_bot):
    await start_bot(InstantBackend(lambda m, a: "Warm up first, then run.", chunk_chars=8, pauses={1: 1.5}),
                    edit_interval_s=0.2)
    started = time.monotonic()
    fake.send("how do I start?", user_id=22)
    first = await fake.wait_for(lambda: fake.bot_messages(22), timeout=5)
    assert time.monotonic() - started < 1.2 and first[0].text == "Warm up" and not first[0].reply_markup
    final = await fake.final_reply(22)
    assert final.text == "Warm up first, then run."


async def test_a_flood_while_a_reply_is_written_gets_one_busy_notice(fake, start_bot, sqlite_engine):
    await start_bot(InstantBackend(lambda m, a: "a slow and careful answer", chunk_chars=6, pauses={1: 2.0}))
    fake.send("first question", user_id=32)
    await fake.wait_for(lambda: fake.bot_messages(32))  # the reply is being written
    for i in range(29):
        fake.send(f"are you there? {i}", user_id=32)
    await fake.wait_for(lambda: len([m for m in rows(sqlite_engine, Message) if m.role == "user"]) == 30)
    await fake.final_reply(32, timeout=15)
    notices = [m for m in fake.bot_messages(32) if "still answering" in m.text]
    assert len(notices) == 1, [m.text for m in fake.bot_messages(32)]
    fake.send("and now?", user_id=32)  # once the reply is done, the next message is answered
    answer = await fake.final_reply(32, after=fake.bot_messages(32)[-1].message_id)
    assert answer.text == "a slow and careful answer"


async def test_a_reply_to_an_answer_replaced_by_a_retry_keeps_that_answer_in_the_prompt(fake, start_bot,
                                                                                           sqlite_engine):
    answers = iter(["the first answer", "the second answer", "the third answer"])
    await start_bot(InstantBackend(lambda m, a: next(answers)))
    fake.send("question", user_id=34)
    first = await fake.final_reply(34)
    fake.press(first, first.data("🔄"))
    second = await fake.final_reply(34, after=first.message_id)
    assert second.text == "the second answer"
    await fake.wait_for(lambda: any(m.platform_message_id == str(first.message_id)
                                    for m in rows(sqlite_engine, Message)))
    fake.send("why that?", user_id=34, reply_to=first.message_id)  # answers the ORIGINAL reply
    await fake.final_reply(34, after=second.message_id)
    prompt = rows(sqlite_engine, Generation)[-1].prompt
    assert [m["content"] for m in prompt[1:]] == ["question", "the first answer", "why that?"]


async def test_a_bare_mention_in_a_group_gets_the_empty_message_answer(fake, start_bot, sqlite_engine):
    await start_bot()
    fake.send("@loopbot_test_bot", user_id=33, chat_id=-330, chat_type="group")
    answer = await fake.wait_for(lambda: fake.bot_messages(-330))
    assert answer[0].text == "That message is empty. Send me some text and I'll answer."
    assert rows(sqlite_engine, Generation) == []


def sent_texts(fake, chat_id: int) -> list[str]:
    """Every text the bot sent to or set in `chat_id`, as it went over the wire (before entity parsing)."""
    return [p["text"] for name, p in fake.calls
            if name in ("sendMessage", "editMessageText") and int(p.get("chat_id", 0)) == chat_id]


async def test_a_reply_full_of_html_entities_near_the_limit_arrives_whole_with_its_buttons(fake, start_bot):
    word = "a<b&&b>c;" * 11  # 99 characters, 231 once escaped for HTML
    text = " ".join([word] * 40) + " " + "x" * 89  # 4,089 characters in 41 words (the instant backend's tokens)
    await start_bot(InstantBackend(lambda m, a: text, chunk_chars=1000))
    fake.send("compare them", user_id=30)
    reply = await fake.final_reply(30)
    assert [label for row in reply.buttons for label, _ in row] == ["👍", "👎", "🔄"]
    parts = fake.bot_messages(30)
    assert all(len(t) <= 4096 for t in sent_texts(fake, 30))
    assert not [name for name, _ in fake.calls if name.endswith("!400")]  # sized right the first time
    assert " ".join(p.text for p in parts).split() == text.split()  # nothing lost, nothing escaped twice
    assert all(p.parse_mode == "HTML" for p in parts) and len(parts) == 3


async def test_message_is_too_long_from_the_server_re_splits_the_reply(fake, start_bot):
    fake.max_text = 3000  # a proxy that counts stricter than Telegram's 4096
    text = " ".join(f"w{i:03d}" + "-" * 15 for i in range(175))  # 3,674 characters in 175 words, nothing to escape
    await start_bot(InstantBackend(lambda m, a: text, chunk_chars=4000))
    fake.send("a long one", user_id=31)
    reply = await fake.final_reply(31)
    parts = fake.bot_messages(31)
    assert len(parts) >= 2 and reply is parts[-1] and reply.buttons
    assert " ".join(p.text for p in parts).split() == text.split()
    assert "sendMessage!400" in [name for name, _ in fake.calls]  # it was refused, then re-split


async def test_stopping_while_a_reply_streams_gives_it_a_final_state(fake, start_bot, sqlite_engine):
    bot = await start_bot(InstantBackend(lambda m, a: "Start slowly and then keep going", chunk_chars=12,
                                         pauses={2: 60.0}))  # two pieces, then a model that stalls for a minute
    fake.send("tell me", user_id=35)
    await fake.wait_for(lambda: fake.bot_messages(35))
    started = time.monotonic()
    await asyncio.wait_for(bot.stop(), 15)
    assert time.monotonic() - started < 5
    [message] = fake.bot_messages(35)
    assert message.text == "Start slowly and then ke\n\n(stopped)" and message.buttons[0][0][0] == "🔄 Try again"
    assert [(g.status, g.error) for g in rows(sqlite_engine, Generation)] == [("error", "cancelled")]


async def test_a_429_in_one_chat_does_not_hold_up_another(fake, start_bot):
    """Why the renderer handles 429 itself rather than python-telegram-bot's AIORateLimiter: that one pauses every
    request of the bot while one chat waits out its retry_after (see docs/platforms-notes.md)."""
    text = "Run easy most days and keep the long run conversational."
    await start_bot(InstantBackend(lambda m, a: text, chunk_chars=6, delay_s=0.05), edit_interval_s=0.1)
    fake.send("A", user_id=36)
    await fake.wait_for(lambda: fake.bot_messages(36))
    fake.fail_next("editMessageText", retry_after=4, chat_id=36)
    await fake.wait_for(lambda: ("editMessageText!429", "36") in [(n, str(p.get("chat_id"))) for n, p in fake.calls])
    started = time.monotonic()
    fake.send("B", user_id=37)  # while chat 36 waits out its 4 s
    await fake.final_reply(37, timeout=15)
    assert time.monotonic() - started < 3
    assert (await fake.final_reply(36, timeout=15)).text == text


async def test_a_stranger_in_an_allowed_group_cannot_vote_retry_or_react(fake, start_bot, sqlite_engine):
    await start_bot(allowed_users=["telegram:20"])
    fake.send("@loopbot_test_bot rate this", user_id=20, chat_id=-300, chat_type="group")
    reply = await fake.final_reply(-300)
    await fake.wait_for(lambda: any(m.platform_message_id == str(reply.message_id)
                                    for m in rows(sqlite_engine, Message)))
    for label in ("👍", "🔄"):
        q = fake.press(reply, reply.data(label), user_id=21)
        await fake.wait_for(lambda q=q: q in fake.callback_answers)
        assert fake.callback_answers[q]["text"].startswith("Sorry, this bot is private"), label
    fake.react(reply, ["👍"], user_id=21)
    fake.react(reply, ["👎"], user_id=20)  # the allowed user's reaction, handled after the stranger's
    await fake.wait_for(lambda: rows(sqlite_engine, Feedback))
    assert [(v.value, v.source) for v in rows(sqlite_engine, Feedback)] == [(-1, "reaction")]
    assert len(rows(sqlite_engine, Generation)) == 1 and len(fake.bot_messages(-300)) == 1
