"""Presses and reactions from users or chats outside the allow-lists are refused like their messages: the
private-bot answer (nothing for a reaction), no row, no model call. On SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from loopbot.bot.messages import Reaction
from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Chat, Comparison, Feedback, Generation, User
from testkit.instant_backend import InstantBackend
from tests.bot.conftest import dm, final, make_service, press

PRIVATE = "Sorry, this bot is private: you are not on its list of allowed users or chats."
GROUP = {"chat": "-100", "chat_type": "group"}


def rows(engine, model):
    with session_scope(engine) as s:
        return list(s.execute(select(model).order_by(model.id)).scalars())


async def _arena_service(engine, settings, **access):
    backend = InstantBackend()
    await backend.load_adapter("coach-v1", "/adapters/coach/v1")
    crud.create_adapter(engine, persona="coach", version=1, base_model="smollm2", path="/adapters/coach/v1")
    crud.activate_adapter(engine, persona="coach", version=1)
    return make_service(engine, settings, backend, arena_rate=1.0, seed=3, **access), backend


async def test_a_stranger_in_an_allowed_group_cannot_vote_retry_pick_confirm_or_react(engine, settings):
    service, backend = await _arena_service(engine, settings, allowed_users=["telegram:1"])
    reply = (await final(service, dm("@bot pick one", user="1", message_id="1", **GROUP)))[0]
    await service.delivered(reply, "2")
    gen_id, owner = reply.generation_ids[0], rows(engine, User)[0]
    requests, gens = len(backend.requests), len(rows(engine, Generation))
    for data in (f"v:{gen_id}:+1", f"v:{gen_id}:-1", f"r:{gen_id}", f"p:{reply.comparison_id}:a",
                 f"f:{owner.id}:y", "zz"):
        out = await service.press(press(data, user="2", **GROUP))
        assert (out.answer, out.replies, out.buttons, out.edit_text) == (PRIVATE, None, None, None), data
    assert await service.reaction(Reaction("telegram", "-100", "2", "2", ("👍",))) is None
    assert rows(engine, Feedback) == [] and [c.pick for c in rows(engine, Comparison)] == [None]
    assert len(rows(engine, Generation)) == gens and len(backend.requests) == requests  # no model call
    assert [u.platform_user_id for u in rows(engine, User)] == ["1"]  # not even a user row for the stranger
    # the allowed user still can
    assert (await service.press(press(f"p:{reply.comparison_id}:a", user="1", **GROUP))).answer == "Thanks! A is kept."
    assert await service.reaction(Reaction("telegram", "-100", "1", "2", ("👍",))) == 1


async def test_presses_and_reactions_in_a_chat_off_the_list_are_refused(engine, settings):
    service, backend = await _arena_service(engine, settings, allowed_chats=["telegram:-100"])
    reply = (await final(service, dm("@bot pick one", user="1", message_id="1", **GROUP)))[0]
    await service.delivered(reply, "2")
    gen_id = reply.generation_ids[0]
    other = {"chat": "-200", "chat_type": "group"}
    requests = len(backend.requests)
    for data in (f"v:{gen_id}:+1", f"r:{gen_id}", f"p:{reply.comparison_id}:b"):
        assert (await service.press(press(data, user="1", **other))).answer == PRIVATE
    assert await service.reaction(Reaction("telegram", "-200", "1", "2", ("👎",))) is None
    assert [c.platform_chat_id for c in rows(engine, Chat)] == ["-100"] and rows(engine, Feedback) == []
    assert len(backend.requests) == requests
