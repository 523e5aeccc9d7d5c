"""The chat commands as a user meets them, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Event, Message, User
from tests.bot.conftest import dm, final, make_service, press


def text_of(replies):
    return "\n".join(r.text for r in replies)


async def test_persona_list_and_switch(engine, settings, service):
    listing = text_of(await final(service, dm("/persona")))
    assert "▶ coach" in listing and "• comedian" in listing and "• clone" in listing
    assert "Now talking as Comediante chileno" in text_of(await final(service, dm("/persona comedian")))
    await final(service, dm("hola"))
    assert service.router.backend.requests[-1]["messages"][0]["content"].startswith("Eres un comediante chileno")
    assert "There is no persona 'pirate'" in text_of(await final(service, dm("/persona pirate")))
    assert "▶ comedian" in text_of(await final(service, dm("/persona@loopbot_test_bot")))


async def test_consent_on_and_off_is_stored_and_audited(engine, service):
    assert "Consent is on" in text_of(await final(service, dm("/consent")))
    assert "will not be used for training" in text_of(await final(service, dm("/consent off")))
    with session_scope(engine) as s:
        user = s.execute(select(User)).scalar_one()
        events = s.execute(select(Event).where(Event.kind == "consent")).scalars().all()
    assert user.consent is False and [e.data["consent"] for e in events] == [False]
    assert "Consent is off" in text_of(await final(service, dm("/consent maybe")))


async def test_stats_counts_replies_and_votes(engine, service):
    reply = (await final(service, dm("hello")))[0]
    await service.press(press(f"v:{reply.generation_ids[0]}:+1"))
    stats = text_of(await final(service, dm("/stats")))
    assert "coach: 1 replies (1 in this chat), 100% 👍 (1 👍, 0 👎)" in stats and "base model" in stats


async def test_admin_commands_need_an_admin(engine, settings):
    service = make_service(engine, settings, admins=["telegram:42"])
    assert text_of(await final(service, dm("/adapters", user="1"))) == "/adapters is for admins only."
    assert "No adapter versions yet" in text_of(await final(service, dm("/adapters", user="42")))
    crud.create_adapter(engine, persona="coach", version=1, base_model="smollm2", path="/x")
    assert "coach-v1: candidate" in text_of(await final(service, dm("/adapters", user="42")))
    assert "Usage: /rollback PERSONA" in text_of(await final(service, dm("/rollback", user="42")))
    assert "/train" in text_of(await final(service, dm("/help", user="42")))
    assert "/train" not in text_of(await final(service, dm("/help", user="1")))


async def test_forget_needs_the_askers_confirmation(engine, service):
    await final(service, dm("secret plan", user="1"))
    ask = (await final(service, dm("/forget", user="1")))[0]
    yes = ask.buttons[0][0].data
    assert (await service.press(press("f:1:n", user="1"))).edit_text == "Nothing was deleted."
    other = await service.press(press(yes, user="2", chat="1"))
    assert other.answer in ("This button has expired.", "Only the person who asked can confirm this.")
    assert len(crud.recent_messages(engine, chat_id=1, conversation_id=crud.get_chat(engine, chat_id=1)
                                    .conversation_id)) == 2
    done = await service.press(press(yes, user="1"))
    assert done.edit_text.startswith("Done: deleted 2 messages")
    with session_scope(engine) as s:
        assert s.execute(select(Message)).first() is None


async def test_allow_lists_refuse_strangers_politely(engine, settings):
    service = make_service(engine, settings, allowed_users=["telegram:1"])
    assert "not on its list of allowed users" in text_of(await final(service, dm("hi", user="2")))
    assert "[base] hi" in text_of(await final(service, dm("hi", user="1")))


async def test_rate_limit_per_minute_and_concurrency(engine, settings):
    now = [0.0]
    service = make_service(engine, settings, messages_per_minute=2, clock=lambda: now[0])
    for _ in range(2):
        await final(service, dm("q"))
    assert "(2 a minute). Please wait about 60 s." in text_of(await final(service, dm("q")))
    now[0] = 61.0
    assert "[base] q" in text_of(await final(service, dm("q")))
    # a second message while the first reply is still streaming
    stream = service.handle(dm("first"))
    await anext(stream)
    assert "still answering" in text_of(await final(service, dm("second")))
    async for _ in stream:
        pass
    now[0] = 200.0
    assert "[base] third" in text_of(await final(service, dm("third")))


async def test_admin_rollback_goes_through_the_trainer_registry(settings, tmp_path):
    from loopbot.app import Loopbot
    from loopbot.bot.chat import ChatService
    from loopbot.training_control import LoopbotTraining
    from testkit.instant_backend import InstantBackend
    from testkit.router_from_database import router_from_database

    settings = settings.model_copy(deep=True)
    settings.access.admins = ["telegram:42"]
    loopbot = Loopbot(settings)
    engine = loopbot.engine
    service = ChatService(engine, settings, router_from_database(engine, settings, InstantBackend()),
                          training=LoopbotTraining(loopbot))
    answer = text_of(await final(service, dm("/rollback coach", user="42")))
    assert answer == "Rollback of coach: not done: coach serves the base model: nothing to roll back"
    from loopbot.trainer.registry import promote

    for version in (1, 2):
        path = tmp_path / f"v{version}"
        path.mkdir()
        (path / "adapter_config.json").write_text("{}")
        crud.create_adapter(engine, persona="coach", version=version, base_model="smollm2", path=str(path))
        await promote(loopbot, "coach", version)
    assert text_of(await final(service, dm("/rollback coach", user="42"))) == \
        "Rollback of coach: now serving coach-v1."
    assert crud.active_adapter(engine, persona="coach").version == 1


async def test_arena_sharing_is_off_until_the_user_says_arena_on(engine, service):
    help_text = text_of(await final(service, dm("/help")))
    assert "/arena: may your messages be shown in the public web arena" in help_text
    assert "only if you say /arena on" in help_text and "You currently do not." in help_text
    assert "Arena sharing is off" in text_of(await final(service, dm("/arena")))
    assert "may now be shown" in text_of(await final(service, dm("/arena on")))
    assert "Arena sharing is on" in text_of(await final(service, dm("/arena maybe")))
    with session_scope(engine) as s:
        user = s.execute(select(User)).scalar_one()
        events = s.execute(select(Event).where(Event.kind == "arena_consent")).scalars().all()
    assert user.arena_consent is True and user.consent is True and [e.data["consent"] for e in events] == [True]
    await final(service, dm("/consent off"))
    assert "Not while you keep your chats out of training" in text_of(await final(service, dm("/arena on")))
    assert "will not be shown" in text_of(await final(service, dm("/arena off")))
    assert crud.get_user(engine, user_id=user.id).arena_consent is False
