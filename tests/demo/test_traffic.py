"""Simulated users go through the real chat core: their votes, retries and arena picks land in storage."""

import collections
import random

from loopbot.bot.chat import ChatService
from loopbot.demo.population import speaks_to_runner
from loopbot.demo.traffic import Traffic
from loopbot.storage import crud
from testkit.instant_backend import InstantBackend
from testkit.router_from_database import router_from_database


def _service(engine, settings, script, *, arena_rate=0.0):
    settings = settings.model_copy(deep=True)
    settings.feedback.arena_rate = arena_rate
    settings.access.messages_per_minute = 1000  # a simulated user asks faster than a person (the demo does this too)
    backend = InstantBackend(script)
    return ChatService(engine, settings, router_from_database(engine, settings, backend), rng=random.Random(0)), backend


async def test_users_vote_by_taste_and_retry_what_they_dislike(engine, settings):
    asked = collections.Counter()  # per question, as users ask concurrently: two disliked answers, then a liked one

    def script(messages, adapter):
        question = messages[-1]["content"]
        asked[question] += 1
        return "You should start slow." if asked[question] % 3 == 0 else "Pacing is key. Start slow."

    service, _ = _service(engine, settings, script)
    turns = await Traffic(service, speaks_to_runner, tag="t", max_retries=2).run(
        [f"Question {i}?" for i in range(6)])
    assert len(turns) == 6 and all(t.error is None for t in turns)
    answers = [a for t in turns for a in t.answers]
    assert sum(len(t.answers) for t in turns) == 18  # 2 disliked + 1 liked per question, in the cycle's order
    assert all(t.answers[-1].liked and not t.answers[0].liked for t in turns)
    up, down = crud.vote_counts(engine, persona="coach")
    assert (up, down) == (6, 12)
    for t in turns:
        retried = crud.get_generation(engine, generation_id=t.answers[1].generation_id)
        assert retried.retry_of_id == t.answers[0].generation_id
    assert {a.served for a in answers} == {None}


async def test_users_pick_in_arena_rounds_between_the_live_version_and_the_base(engine, settings, tmp_path):
    def script(messages, adapter):
        return "You will love this plan." if adapter else "A plan is good."

    crud.create_adapter(engine, persona="coach", version=1, base_model="smollm2", path=str(tmp_path))
    crud.activate_adapter(engine, persona="coach", version=1)
    service, _backend = _service(engine, settings, script, arena_rate=1.0)  # the router loads the live coach-v1
    turns = await Traffic(service, speaks_to_runner, tag="arena").run(["How do I taper?", "What shoes?"])
    for turn in turns:
        assert turn.arena_pick in ("a", "b")
        liked = [a for a in turn.answers if a.liked]
        assert [a.served for a in liked] == ["coach-v1"]
        picked = turn.answers[0 if turn.arena_pick == "a" else 1]
        assert picked.served == "coach-v1"
    assert crud.vote_counts(engine, persona="coach", adapter_version="coach-v1") == (2, 0)
