"""No synchronous database call on the event loop: a chat turn, a vote, a retry, an arena pick, a reaction, a reply to
an earlier message and the commands run their SQL in the database threads (storage/aio.py), through the chat core
(SQLite and PostgreSQL) and through the real python-telegram-bot path over the loopback Bot API."""

from __future__ import annotations

import random

from loopbot.bot.chat import ChatService
from loopbot.bot.messages import Reaction
from loopbot.bot.telegram import TelegramBot
from loopbot.storage import crud
from loopbot.storage.loop_guard import LoopGuard
from testkit.fake_telegram import TOKEN, FakeTelegram
from testkit.instant_backend import InstantBackend
from testkit.router_from_database import router_from_database
from tests.bot.conftest import dm, final, make_service, press


def _where(guard: LoopGuard) -> str:
    return "\n".join(f"{c.statement}  at {c.where}" for c in guard.calls[:10])


async def test_the_chat_core_never_runs_sql_on_the_event_loop(engine, settings):
    backend = InstantBackend()
    await backend.load_adapter("coach-v1", "/adapters/coach/v1")
    crud.create_adapter(engine, persona="coach", version=1, base_model="smollm2", path="/adapters/coach/v1")
    crud.activate_adapter(engine, persona="coach", version=1)
    service = make_service(engine, settings, backend)
    arena = make_service(engine, settings, backend, arena_rate=1.0, seed=3)
    with LoopGuard(engine) as guard:
        reply = (await final(service, dm("How do I pace a marathon?", message_id="10")))[0]
        await service.delivered(reply, "11")
        gen_id = reply.generation_ids[0]
        assert (await service.press(press(f"v:{gen_id}:+1"))).answer.startswith("Thanks")
        retry = await service.press(press(f"r:{gen_id}"))
        assert [r async for r in retry.replies][-1].final
        assert await service.reaction(Reaction("telegram", "1", "1", "11", ("👎",))) == -1
        assert (await final(service, dm("and after that?", message_id="12", reply_to_message_id="11")))[0].final
        for command in ("/help", "/stats", "/retry", "/new", "/persona coach", "/consent off", "/arena on", "/forget"):
            assert (await final(service, dm(command)))[-1].final, command
        round_ = (await final(arena, dm("pick one", user="2")))[0]
        assert (await arena.press(press(f"p:{round_.comparison_id}:a", user="2"))).answer == "Thanks! A is kept."
        forget = await final(service, dm("/forget", user="3"))
        assert (await service.press(press(f"f:{forget[0].buttons[0][0].data.split(':')[1]}:y", user="3"))).answer
    assert guard.calls == [], f"{len(guard.calls)} SQL statements on the event loop, the first:\n{_where(guard)}"


async def test_the_telegram_bot_never_runs_sql_on_the_event_loop(sqlite_engine, settings):
    fake = await FakeTelegram().start()
    s = settings.model_copy(deep=True)
    s.feedback.arena_rate = 0.0
    s.telegram.base_url, s.telegram.base_file_url = fake.base_url, fake.base_file_url
    s.telegram.edit_interval_s = 0.05
    answers = iter(["first try", "second try"])
    backend = InstantBackend(lambda m, a: next(answers))
    service = ChatService(sqlite_engine, s, router_from_database(sqlite_engine, s, backend), rng=random.Random(0))
    bot = TelegramBot(service, s.telegram, TOKEN, poll_timeout_s=5)
    await bot.start()
    try:
        with LoopGuard(sqlite_engine) as guard:
            fake.send("question", user_id=4)
            first = await fake.final_reply(4)
            vote = fake.press(first, first.data("👍"))
            await fake.wait_for(lambda: vote in fake.callback_answers)
            fake.press(first, first.data("🔄"))
            second = await fake.final_reply(4, after=first.message_id)
            assert second.text == "second try"
    finally:
        await bot.stop()
        await fake.stop()
    assert guard.calls == [], f"{len(guard.calls)} SQL statements on the event loop, the first:\n{_where(guard)}"
