"""The chat core, platform-free: storage before/after the model call, history, votes, retries, arena, errors."""

from __future__ import annotations

from sqlalchemy import select

from loopbot.bot.history import message_cost
from loopbot.bot.messages import Reaction
from loopbot.serving.errors import Overloaded
from loopbot.storage import crud
from loopbot.storage.db import session_scope
from loopbot.storage.models import Comparison, Feedback, Generation, Message
from testkit.instant_backend import InstantBackend
from tests.bot.conftest import dm, final, make_service, press


def rows(engine, model):
    with session_scope(engine) as s:
        return list(s.execute(select(model).order_by(model.id)).scalars())


async def test_reply_streams_and_everything_is_stored(engine, settings):
    seen_in_db = []

    def script(messages, adapter):
        seen_in_db.append([(m.role, m.text) for m in rows(engine, Message)])
        return "Start slow and finish strong, runner."

    service = make_service(engine, settings, InstantBackend(script, chunk_chars=5))
    states = [r async for r in service.handle(dm("How do I pace a marathon?", message_id="10"))]
    assert len(states) > 2 and [s.text for s in states[:2]] == ["Start", "Start slow"]
    assert states[-1].final and states[-1].text == "Start slow and finish strong, runner."
    assert [b.label for b in states[-1].buttons[0]] == ["👍", "👎", "🔄"]
    # the user's message and an empty pending reply existed before the model was called
    assert seen_in_db == [[("user", "How do I pace a marathon?"), ("assistant", "")]]
    gen = rows(engine, Generation)[0]
    assert gen.status == "ok" and gen.persona == "coach" and gen.adapter_version is None
    assert gen.prompt[0] == {"role": "system", "content": settings.personas["coach"].system_prompt}
    assert gen.prompt[-1] == {"role": "user", "content": "How do I pace a marathon?"}
    assert gen.latency_ms is not None and gen.completion_tokens == 6
    assert rows(engine, Message)[1].text == "Start slow and finish strong, runner."


async def test_history_follows_the_conversation_within_the_budget(engine, settings):
    backend = InstantBackend()
    service = make_service(engine, settings, backend)
    for text in ["first question", "second question", "third question"]:
        await final(service, dm(text))
    roles = [m["role"] for m in backend.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    await final(service, dm("/new"))
    await final(service, dm("fresh start"))
    assert [m["content"] for m in backend.requests[-1]["messages"][1:]] == ["fresh start"]

    settings = settings.model_copy(deep=True)
    budget = message_cost(settings.personas["coach"].system_prompt) + message_cost("x" * 30)
    settings.personas["coach"].context_tokens = budget + 5  # the system prompt + the newest message only
    small = make_service(engine, settings, backend)
    await final(small, dm("x" * 30))
    assert [m["role"] for m in backend.requests[-1]["messages"]] == ["system", "user"]


async def test_vote_changes_and_withdraws(engine, service):
    reply = (await final(service, dm("hi")))[0]
    gen_id = reply.generation_ids[0]
    out = await service.press(press(f"v:{gen_id}:+1"))
    assert out.answer.startswith("Thanks") and out.buttons[0][0].label == "👍 1"
    out = await service.press(press(f"v:{gen_id}:-1"))
    assert out.buttons[0][0].label == "👍" and out.buttons[0][1].label == "👎 1"
    votes = rows(engine, Feedback)
    assert [(v.value, v.source) for v in votes] == [(-1, "button")]
    out = await service.press(press(f"v:{gen_id}:-1"))
    assert out.answer == "Vote withdrawn." and rows(engine, Feedback) == []


async def test_forged_or_foreign_presses_are_expired(engine, service):
    reply = (await final(service, dm("mine", user="1")))[0]
    await final(service, dm("theirs", user="2"))
    gen_id = reply.generation_ids[0]
    for data in [f"v:{gen_id}:+1", f"r:{gen_id}", f"v:{gen_id}:+5", "v:abc:+1", "zz", "p:999:a", ""]:
        out = await service.press(press(data, user="2"))
        assert out.answer == "This button has expired." and out.replies is None, data
    # a stranger pressing in a private chat they never wrote in
    assert (await service.press(press(f"v:{gen_id}:+1", user="3", chat="1"))).answer == "This button has expired."
    assert rows(engine, Feedback) == []


async def test_retry_is_stored_as_a_retry_and_replaces_the_answer_in_history(engine, settings):
    answers = iter(["first answer", "second answer", "third"])
    backend = InstantBackend(lambda m, a: next(answers))
    service = make_service(engine, settings, backend)
    first = (await final(service, dm("question")))[0]
    out = await service.press(press(f"r:{first.generation_ids[0]}"))
    retried = [r async for r in out.replies][-1]
    assert retried.text == "second answer" and retried.final
    gens = rows(engine, Generation)
    assert gens[1].retry_of_id == gens[0].id and gens[1].prompt == gens[0].prompt
    assert gens[1].prompt_message_id == gens[0].prompt_message_id
    assert [g.in_history for g in gens] == [False, True]
    # /retry retries the newest answer
    third = (await final(service, dm("/retry")))[0]
    assert third.text == "third" and rows(engine, Generation)[2].retry_of_id == gens[1].id


async def test_arena_shows_two_versions_and_the_pick_stays_in_history(engine, settings):
    backend = InstantBackend()
    await backend.load_adapter("coach-v1", "/adapters/coach/v1")
    crud.create_adapter(engine, persona="coach", version=1, base_model="smollm2", path="/adapters/coach/v1")
    crud.activate_adapter(engine, persona="coach", version=1)
    service = make_service(engine, settings, backend, arena_rate=1.0, seed=3)
    reply = (await final(service, dm("pick one")))[0]
    assert "🅰️ A" in reply.text and "🅱️ B" in reply.text and reply.comparison_id
    gens = {g.id: g for g in rows(engine, Generation)}
    a, b = (gens[i] for i in reply.generation_ids)
    assert {a.adapter_version, b.adapter_version} == {"coach-v1", None}
    assert f"[{a.adapter_version or 'base'}] pick one" in reply.text.split("🅱️")[0]
    out = await service.press(press(f"p:{reply.comparison_id}:b"))
    assert out.answer == "Thanks! B is kept." and out.buttons[0][0].data == f"v:{b.id}:+1"
    cmp = rows(engine, Comparison)[0]
    assert cmp.pick == "b" and cmp.user_id is not None
    history = crud.recent_messages(engine, chat_id=a.chat_id, conversation_id=crud.get_message(
        engine, message_id=a.message_id).conversation_id)
    assert [m.id for m in history if m.role == "assistant"] == [b.message_id]


async def test_arena_order_is_deterministic_for_a_seed(engine, settings):
    backend = InstantBackend()
    await backend.load_adapter("coach-v1", "x")
    crud.create_adapter(engine, persona="coach", version=1, base_model="smollm2", path="x")
    crud.activate_adapter(engine, persona="coach", version=1)
    orders = []
    for chat in ("a", "b"):
        service = make_service(engine, settings, backend, arena_rate=1.0, seed=7)
        reply = (await final(service, dm("q", user=chat)))[0]
        orders.append([crud.get_generation(engine, generation_id=g).adapter_version for g in reply.generation_ids])
    assert orders[0] == orders[1]


async def test_serving_error_is_shown_politely_and_stored(engine, settings):
    service = make_service(engine, settings, InstantBackend(lambda m, a: Overloaded("queue full")))
    reply = (await final(service, dm("hello?")))[0]
    assert reply.text == Overloaded.user_message and reply.buttons[0][0].label.startswith("🔄")
    gen = rows(engine, Generation)[0]
    assert gen.status == "error" and "queue full" in gen.error
    assert [m.text for m in rows(engine, Message) if m.role == "user"] == ["hello?"]


async def test_a_reply_cut_at_max_tokens_is_marked(engine, settings):
    settings = settings.model_copy(deep=True)
    settings.personas["coach"].sampling.max_tokens = 3
    service = make_service(engine, settings, InstantBackend(lambda m, a: "one two three four five"))
    reply = (await final(service, dm("long please")))[0]
    assert reply.text == "one two three …"
    gen = rows(engine, Generation)[0]
    assert (gen.status, gen.finish_reason) == ("cut_off", "length")


async def test_reactions_count_as_votes(engine, service):
    reply = (await final(service, dm("hi", message_id="5")))[0]
    await service.delivered(reply, "6")
    assert await service.reaction(Reaction("telegram", "1", "1", "6", ("👍",))) == 1
    assert await service.reaction(Reaction("telegram", "1", "1", "6", ("👎",))) == -1
    assert [(v.value, v.source) for v in rows(engine, Feedback)] == [(-1, "reaction")]
    assert await service.reaction(Reaction("telegram", "1", "1", "6", ())) is None
    assert rows(engine, Feedback) == []
    assert await service.reaction(Reaction("telegram", "1", "1", "5", ("👍",))) is None  # the user's own message


async def test_reply_chain_is_the_history_in_groups(engine, settings):
    backend = InstantBackend()
    service = make_service(engine, settings, backend)
    group = {"chat": "-100", "chat_type": "group"}
    first = (await final(service, dm("@bot what is a tempo run?", message_id="1", **group)))[0]
    await service.delivered(first, "2")
    await final(service, dm("@bot unrelated", message_id="3", **group))
    assert [m["content"] for m in backend.requests[-1]["messages"][1:]] == ["@bot unrelated"]
    await final(service, dm("and how often?", message_id="4", reply_to_message_id="2", **group))
    assert [m["role"] for m in backend.requests[-1]["messages"]] == ["system", "user", "assistant", "user"]
    assert backend.requests[-1]["messages"][1]["content"] == "@bot what is a tempo run?"
    # not addressed to the bot: no answer, nothing stored
    assert [r async for r in service.handle(dm("chatting among ourselves", addressed=False, **group))] == []


async def test_an_abandoned_reply_is_stored_and_frees_the_users_slot(engine, settings):
    service = make_service(engine, settings, InstantBackend(lambda m, a: "a long answer in pieces", chunk_chars=4))
    stream = service.handle(dm("question"))
    first = await anext(stream)
    assert first.text == "a lo" and not first.final
    await stream.aclose()  # the platform gave up (the user blocked the bot, the network failed ...)
    gen = rows(engine, Generation)[0]
    assert (gen.status, gen.error) == ("error", "abandoned")
    assert crud.get_message(engine, message_id=gen.message_id).text == "a lo"
    assert [m.text for m in rows(engine, Message) if m.role == "user"] == ["question"]
    assert (await final(service, dm("again")))[0].text == "a long answer in pieces"
