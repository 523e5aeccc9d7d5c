"""The real discord.py client against a loopback Discord gateway + REST server: what a Discord user sees."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from sqlalchemy import select

from loopbot.bot.chat import ChatService
from loopbot.bot.discord import DiscordBot
from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Comparison, Feedback, Generation, Message, User
from testkit.fake_discord import FakeDiscord
from testkit.instant_backend import InstantBackend
from testkit.router_from_database import router_from_database


def rows(engine, model):
    with session_scope(engine) as s:
        return list(s.execute(select(model).order_by(model.id)).scalars())


def labels(message: dict) -> list[str]:
    return [b.get("label") for b in FakeDiscord.buttons(message)]


def final(message: dict) -> bool:
    """A finished reply carries its buttons."""
    return bool(FakeDiscord.buttons(message))


@pytest.fixture
async def fake():
    server = await FakeDiscord().start()
    yield server
    await server.stop()


@pytest.fixture
async def start_bot(fake, sqlite_engine, settings):
    """start_bot(backend=..., **access) -> a running DiscordBot; every bot is stopped and must have no errors."""
    bots: list[DiscordBot] = []

    async def start(backend=None, *, edit_interval_s=0.05, arena_rate=0.0, max_tokens=2000, **access):
        s = settings.model_copy(deep=True)
        for persona in s.personas.values():
            persona.sampling.max_tokens = max_tokens  # the instant backend counts words as tokens
        s.feedback.arena_rate = arena_rate
        s.discord.api_base, s.discord.gateway_url = fake.api_base, fake.gateway_url
        s.discord.edit_interval_s = edit_interval_s
        for key, value in access.items():
            setattr(s.access, key, value)
        service = ChatService(sqlite_engine, s, router_from_database(sqlite_engine, s, backend or InstantBackend()),
                              rng=random.Random(0))
        bot = DiscordBot(service, s, token=fake.token, guild_ready_timeout=0.05)
        await bot.start(timeout_s=15)
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        await bot.stop()
    assert [repr(e) for bot in bots for e in bot.errors] == []


async def test_answers_a_mention_and_ignores_chatter(fake, start_bot, sqlite_engine):
    await start_bot()
    alice = fake.user("alice")
    await fake.say(alice, "just chatting with friends")
    asked = await fake.say(alice, "how far is a marathon?", mention_bot=True)
    reply = await fake.wait_for_message(final)
    assert reply["content"] == "[base] how far is a marathon?"  # the mention is not part of the prompt
    assert reply["message_reference"]["message_id"] == asked["id"]  # answers as a reply
    assert labels(reply) == ["👍", "👎", "🔄"]
    assert len(fake.bot_messages()) == 1  # the chatter got no answer
    assert fake.identify["intents"] & (1 << 15)  # asks for message content (replies without a mention)
    texts = [m.text for m in rows(sqlite_engine, Message)]
    assert texts == ["how far is a marathon?", "[base] how far is a marathon?"]


async def test_a_reply_chain_is_the_conversation_history(fake, start_bot, sqlite_engine):
    backend = InstantBackend(lambda messages, adapter: " | ".join(m["content"] for m in messages[1:]))
    await start_bot(backend)
    alice, bob = fake.user("alice"), fake.user("bob")
    await fake.say(alice, "first", mention_bot=True)
    first = await fake.wait_for_message(lambda m: final(m) and m["content"] == "first")
    await fake.say(bob, "unrelated", mention_bot=True)
    await fake.wait_for_message(lambda m: final(m) and m["content"] == "unrelated")
    await fake.say(alice, "second", reply_to=first, ping_reply=False)  # a reply without a ping still counts
    second = await fake.wait_for_message(lambda m: final(m) and m["content"].endswith("second"))
    assert second["content"] == "first | first | second"  # the chain, not bob's message in between
    await fake.say(alice, "third", reply_to=second)
    third = await fake.wait_for_message(lambda m: final(m) and m["content"].endswith("third"))
    assert third["content"] == "first | first | second | first | first | second | third"
    assert len(rows(sqlite_engine, Generation)) == 4


async def test_direct_messages_need_no_mention(fake, start_bot, sqlite_engine):
    await start_bot()
    alice = fake.user("alice")
    await fake.say(alice, "hello there", dm=True)
    reply = await fake.wait_for_message(final)
    assert reply["content"] == "[base] hello there"
    assert int(reply["channel_id"]) == fake.dm_channel_of(alice)
    assert "message_reference" not in reply  # no need to quote the message in a one-to-one chat
    await fake.wait_answered(await fake.press(alice, reply, label="👎"))
    assert [(f.value, f.source) for f in rows(sqlite_engine, Feedback)] == [(-1, "button")]


async def test_slash_commands_are_registered_and_answer(fake, start_bot, sqlite_engine):
    await start_bot()
    names = {c["name"] for c in fake.global_commands}
    assert names >= {"start", "help", "persona", "new", "retry", "consent", "forget", "stats", "train", "adapters",
                     "rollback"}
    alice = fake.user("alice")
    shown = (await fake.response_of(await fake.slash(alice, "help")))["content"]
    assert "Rate every answer with 👍 or 👎" in shown and "/train" not in shown
    switched = await fake.response_of(await fake.slash(alice, "persona", {"name": "comedian"}))
    assert "Now talking as Comediante chileno" in switched["content"]
    denied = await fake.response_of(await fake.slash(alice, "train"))
    assert denied["content"] == "/train is for admins only."
    persona_option = next(c for c in fake.global_commands if c["name"] == "persona")["options"][0]
    assert {c["value"] for c in persona_option["choices"]} == {"coach", "comedian", "clone"}
    opted_out = await fake.response_of(await fake.slash(alice, "consent", {"choice": "off"}))
    assert "will not be used for training" in opted_out["content"]
    assert [u.consent for u in rows(sqlite_engine, User)] == [False]
    await fake.say(alice, "hola", mention_bot=True)
    reply = await fake.wait_for_message(final)
    assert rows(sqlite_engine, Generation)[0].persona == "comedian"  # the switch holds for this channel
    assert reply["content"] == "[base] hola"


async def test_retry_by_slash_command_is_stored_as_a_retry(fake, start_bot, sqlite_engine):
    answers = iter(["one answer", "another answer"])
    await start_bot(InstantBackend(lambda m, a: next(answers)))
    alice = fake.user("alice")
    await fake.say(alice, "tell me something", mention_bot=True)
    await fake.wait_for_message(lambda m: final(m) and m["content"] == "one answer")
    retried = await fake.slash(alice, "retry")
    again = await fake.wait_for_message(lambda m: final(m) and m["content"] == "another answer")
    assert int(again["id"]) == retried.original_message_id  # shown in the command's own response
    first, second = rows(sqlite_engine, Generation)
    assert second.retry_of_id == first.id and not first.in_history


async def test_button_vote_changes_and_survives_a_restart(fake, start_bot, sqlite_engine):
    bot = await start_bot()
    alice = fake.user("alice")
    await fake.say(alice, "rate me", mention_bot=True)
    reply = await fake.wait_for_message(final)
    pressed = await fake.wait_answered(await fake.press(alice, reply, label="👍"))
    assert pressed.ephemeral is False and pressed.response_type == 7  # the message itself is updated
    assert labels(fake.messages[int(reply["id"])]) == ["👍 1", "👎", "🔄"]
    await asyncio.sleep(0.2)
    assert "Thanks! 👍 noted." in [m["content"] for m in pressed.followups]
    assert [(f.value, f.source) for f in rows(sqlite_engine, Feedback)] == [(1, "button")]

    await bot.stop()
    await start_bot()  # a new process: the buttons on old messages must still work
    assert fake.identify_count == 2
    await fake.wait_answered(await fake.press(alice, fake.messages[int(reply["id"])], label="👎"))
    assert [(f.value, f.source) for f in rows(sqlite_engine, Feedback)] == [(-1, "button")]  # changed, not added
    assert labels(fake.messages[int(reply["id"])]) == ["👍", "👎 1", "🔄"]


async def test_retry_button_posts_another_answer(fake, start_bot, sqlite_engine):
    answers = iter(["first try", "second try"])
    await start_bot(InstantBackend(lambda m, a: next(answers)))
    alice = fake.user("alice")
    await fake.say(alice, "go", mention_bot=True)
    reply = await fake.wait_for_message(lambda m: final(m) and m["content"] == "first try")
    await fake.press(alice, reply, label="🔄")
    again = await fake.wait_for_message(lambda m: final(m) and m["content"] == "second try")
    assert again["message_reference"]["message_id"] == reply["id"]
    first, second = rows(sqlite_engine, Generation)
    assert second.retry_of_id == first.id


async def test_reactions_count_as_votes(fake, start_bot, sqlite_engine):
    await start_bot()
    alice = fake.user("alice")
    await fake.say(alice, "react to this", mention_bot=True)
    reply = await fake.wait_for_message(final)
    await fake.react(alice, reply, "👍🏽")  # a skin tone is still a thumbs up
    await asyncio.sleep(0.3)
    assert [(f.value, f.source) for f in rows(sqlite_engine, Feedback)] == [(1, "reaction")]
    await fake.react(alice, reply, "👎")
    await asyncio.sleep(0.3)
    assert [f.value for f in rows(sqlite_engine, Feedback)] == [-1]
    await fake.react(alice, reply, "👎", remove=True)
    await asyncio.sleep(0.3)
    assert [f.value for f in rows(sqlite_engine, Feedback)] == [1]  # back to the 👍 still on the message
    await fake.react(alice, reply, "👍🏽", remove=True)
    await fake.react(alice, reply, "🎉")
    await asyncio.sleep(0.3)
    assert rows(sqlite_engine, Feedback) == []


async def test_slash_commands_work_in_a_dm(fake, start_bot):
    await start_bot()
    alice = fake.user("alice")
    stats = await fake.response_of(await fake.slash(alice, "stats", dm=True))
    assert stats["content"].startswith("coach: 0 replies") and stats["channel_id"] == str(fake.dm_channel_of(alice))


async def test_a_long_reply_is_split_at_2000_characters(fake, start_bot, sqlite_engine):
    sentence = "Keep the long run slow, eat before you are hungry, and sleep well the week before. "
    text = sentence * 60  # ~5000 characters
    await start_bot(InstantBackend(lambda m, a: text, chunk_chars=400))
    alice = fake.user("alice")
    await fake.say(alice, "tell me everything", mention_bot=True)
    last = await fake.wait_for_message(final)
    parts = fake.bot_messages()
    assert len(parts) == 3 and all(len(p["content"]) <= 2000 for p in parts)
    assert " ".join(p["content"] for p in parts).split() == text.split()  # nothing lost at the cuts
    assert last is parts[-1] and not FakeDiscord.buttons(parts[0])  # buttons only under the last part
    assert rows(sqlite_engine, Generation)[0].status == "ok"


async def test_streaming_edits_are_throttled(fake, start_bot):
    text = "Run easy most days and keep the long run conversational. " * 3
    await start_bot(InstantBackend(lambda m, a: text, chunk_chars=6, delay_s=0.02), edit_interval_s=0.15)
    alice = fake.user("alice")
    await fake.say(alice, "how should I train?", mention_bot=True)
    reply = await fake.wait_for_message(final)
    history = fake.edits[int(reply["id"])]
    assert reply["content"] == text.strip() or reply["content"] == text
    assert 2 <= len(history) <= 10  # streamed, but nowhere near one edit per chunk (29 chunks)
    states = fake.states[int(reply["id"])]
    assert all(a != b for a, b in itertools.pairwise(states))  # never an identical edit


async def test_a_channel_it_may_not_post_in_keeps_the_message_and_the_bot_running(fake, start_bot, sqlite_engine):
    await start_bot()
    fake.read_only_channels.add(fake.other_channel_id)
    alice = fake.user("alice")
    await fake.say(alice, "can you hear me?", mention_bot=True, channel_id=fake.other_channel_id)
    for _ in range(200):  # until the bot has given up on that channel
        if fake.requests.count(("POST", f"/channels/{fake.other_channel_id}/messages")):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    await fake.say(alice, "and here?", mention_bot=True)  # answered: the failed reply freed alice's slot
    reply = await fake.wait_for_message(final)
    assert reply["content"] == "[base] and here?" and len(fake.bot_messages()) == 1
    assert [m.text for m in rows(sqlite_engine, Message) if m.role == "user"] == ["can you hear me?", "and here?"]


async def test_a_slow_first_word_shows_typing(fake, start_bot):
    await start_bot(InstantBackend(lambda m, a: "thinking hard", chunk_chars=50, delay_s=0.6))
    alice = fake.user("alice")
    await fake.say(alice, "a hard question", mention_bot=True)
    await fake.wait_for_message(final)
    assert ("POST", f"/channels/{fake.channel_id}/typing") in fake.requests


async def test_a_429_on_edits_is_waited_out(fake, start_bot):
    fake.edit_limit = (2, 0.5)  # 2 edits per message per 0.5 s, then 429 with retry_after
    text = "word " * 120
    await start_bot(InstantBackend(lambda m, a: text, chunk_chars=10, delay_s=0.01), edit_interval_s=0.1)
    alice = fake.user("alice")
    await fake.say(alice, "stream fast", mention_bot=True)
    reply = await fake.wait_for_message(final, timeout=20)
    assert reply["content"].split() == text.split()
    assert fake.rate_limited  # it was told to wait, waited, and still delivered the final state


async def test_forged_and_foreign_presses_are_rejected(fake, start_bot, sqlite_engine):
    await start_bot()
    alice, mallory = fake.user("alice"), fake.user("mallory")
    await fake.say(alice, "my question", dm=True)
    alice_reply = await fake.wait_for_message(final)
    vote_id = FakeDiscord.buttons(alice_reply)[0]["custom_id"]
    # mallory sends an interaction naming alice's reply from a channel it does not belong to
    await fake.say(mallory, "hi", mention_bot=True)
    mallory_reply = await fake.wait_for_message(lambda m: final(m) and m["channel_id"] == str(fake.channel_id))
    forged = await fake.wait_answered(await fake.press(mallory, mallory_reply, vote_id, forged=True))
    garbage = await fake.wait_answered(await fake.press(mallory, mallory_reply, "lb:v:99999999:+9", forged=True))
    alien = await fake.wait_answered(await fake.press(mallory, mallory_reply, "someone-else:1", forged=True))
    for inter in (forged, garbage, alien):
        assert inter.ephemeral and inter.responses[0]["data"]["content"] == "This button has expired."
    assert rows(sqlite_engine, Feedback) == []
    assert labels(fake.messages[int(alice_reply["id"])]) == ["👍", "👎", "🔄"]


async def test_stickers_and_images_get_a_useful_answer(fake, start_bot):
    await start_bot()
    alice = fake.user("alice")
    await fake.say(alice, "", dm=True, sticker=True)
    reply = await fake.wait_for_message(lambda m: "sticker" in m["content"])
    assert "I can only read text" in reply["content"]


async def test_arena_round_shows_a_and_b_and_stores_the_pick(fake, start_bot, sqlite_engine):
    backend = InstantBackend()
    await backend.load_adapter("coach-v1", "/x")
    crud.create_adapter(sqlite_engine, persona="coach", version=1, base_model="smollm2", path="/x")
    crud.activate_adapter(sqlite_engine, persona="coach", version=1)
    await start_bot(backend, arena_rate=1.0)
    alice = fake.user("alice")
    await fake.say(alice, "which is better?", mention_bot=True)
    reply = await fake.wait_for_message(final)
    assert "🅰️ A" in reply["content"] and "🅱️ B" in reply["content"]
    assert "[coach-v1] which is better?" in reply["content"] and "[base] which is better?" in reply["content"]
    await fake.wait_answered(await fake.press(alice, reply, "lb:" + next(
        b["custom_id"][3:] for b in FakeDiscord.buttons(reply) if b["label"].startswith("🅱️"))))
    assert labels(fake.messages[int(reply["id"])]) == ["👍", "👎", "🔄"]  # now rate the kept answer
    assert rows(sqlite_engine, Comparison)[0].pick == "b"


async def test_forget_asks_then_deletes_only_for_the_asker(fake, start_bot, sqlite_engine):
    await start_bot()
    alice, bob = fake.user("alice"), fake.user("bob")
    await fake.say(alice, "remember this", mention_bot=True)
    await fake.wait_for_message(final)
    ask = await fake.response_of(await fake.slash(alice, "forget"))
    assert "cannot be undone" in ask["content"]
    refused = await fake.wait_answered(await fake.press(bob, ask, label="🗑 Yes, delete everything"))
    assert refused.ephemeral and "Only the person who asked" in refused.responses[0]["data"]["content"]
    assert len(rows(sqlite_engine, Message)) == 2
    await fake.wait_answered(await fake.press(alice, ask, label="🗑 Yes, delete everything"))
    done = fake.messages[int(ask["id"])]
    assert done["content"].startswith("Done: deleted") and done["components"] == []
    assert rows(sqlite_engine, Message) == [] and rows(sqlite_engine, Generation) == []


async def test_a_user_over_the_rate_limit_gets_a_polite_answer(fake, start_bot, sqlite_engine):
    await start_bot(messages_per_minute=2)
    alice = fake.user("alice")
    for i in range(3):
        await fake.say(alice, f"message {i}", dm=True)
        await fake.wait_for_message(lambda m, i=i: f"message {i}" in m["content"] or "faster than" in m["content"])
    assert "faster than I can answer" in fake.bot_messages()[-1]["content"]
    assert [m.text for m in rows(sqlite_engine, Message) if m.role == "user"] == [
        "message 0", "message 1", "message 2"]  # the refused message is kept


async def test_a_reply_to_an_answer_replaced_by_a_retry_keeps_that_answer_in_the_prompt(fake, start_bot,
                                                                                           sqlite_engine):
    answers = iter(["the first answer", "the second answer", "the third answer"])
    await start_bot(InstantBackend(lambda m, a: next(answers)))
    alice = fake.user("alice")
    await fake.say(alice, "question", mention_bot=True)
    first = await fake.wait_for_message(lambda m: final(m) and m["content"] == "the first answer")
    await fake.press(alice, first, label="🔄")
    await fake.wait_for_message(lambda m: final(m) and m["content"] == "the second answer")
    await fake.say(alice, "why that?", reply_to=first)  # a Discord reply to the ORIGINAL answer
    await fake.wait_for_message(lambda m: final(m) and m["content"] == "the third answer")
    prompt = rows(sqlite_engine, Generation)[-1].prompt
    assert [m["content"] for m in prompt[1:]] == ["question", "the first answer", "why that?"]


async def test_a_bare_mention_gets_the_empty_message_answer(fake, start_bot, sqlite_engine):
    await start_bot()
    alice = fake.user("alice")
    await fake.say(alice, "", mention_bot=True)  # "<@bot> ": a mention and nothing else
    reply = await fake.wait_for_message(lambda m: bool(m["content"]), timeout=5)
    assert reply["content"] == "That message is empty. Send me some text and I'll answer."
    assert rows(sqlite_engine, Generation) == []


async def test_a_stranger_cannot_vote_retry_or_react_on_a_reply(fake, start_bot, sqlite_engine):
    alice, mallory = fake.user("alice"), fake.user("mallory")
    await start_bot(allowed_users=[f"discord:{alice.id}"])
    await fake.say(alice, "rate this", mention_bot=True)
    reply = await fake.wait_for_message(final)
    for label in ("👍", "🔄"):
        pressed = await fake.wait_answered(await fake.press(mallory, reply, label=label))
        assert pressed.ephemeral and pressed.responses[0]["data"]["content"].startswith("Sorry, this bot is private")
    await fake.react(mallory, reply, "👍")
    await asyncio.sleep(0.3)
    assert rows(sqlite_engine, Feedback) == [] and len(rows(sqlite_engine, Generation)) == 1
    assert labels(fake.messages[int(reply["id"])]) == ["👍", "👎", "🔄"]
    assert [u.platform_user_id for u in rows(sqlite_engine, User)] == [str(alice.id)]


async def test_arena_slash_command_takes_on_or_off(fake, start_bot, sqlite_engine):
    await start_bot()
    option = next(c for c in fake.global_commands if c["name"] == "arena")["options"][0]
    assert option["name"] == "choice" and {c["value"] for c in option["choices"]} == {"on", "off"}
    alice = fake.user("alice")
    shown = await fake.response_of(await fake.slash(alice, "arena", {"choice": "on"}))
    assert "may now be shown" in shown["content"]
    assert [u.arena_consent for u in rows(sqlite_engine, User)] == [True]
