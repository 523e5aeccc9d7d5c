"""Simulated users behave like people: a mixture of tastes, sparse and noisy votes, few retries, follow-ups."""

import random
from collections import Counter

import pytest

from loopbot.base.errors import UsageError
from loopbot.bot.chat import ChatService
from loopbot.demo import population
from loopbot.demo.behaviour import IDEAL, REALISTIC, Behaviour, resolve
from loopbot.demo.mixture import load_population
from loopbot.demo.runner import round_summary
from loopbot.demo.traffic import Traffic
from loopbot.storage import crud
from loopbot.storage.models import Generation
from testkit.instant_backend import InstantBackend
from testkit.router_from_database import router_from_database


def test_a_population_is_a_weighted_mixture_and_each_user_keeps_one_taste():
    mix = load_population("mentions_recovery:0.7,punchy_opening:0.3")
    assert [(t.short, t.weight) for t in mix.tastes] == [("mentions_recovery", 0.7), ("punchy_opening", 0.3)]
    assert mix.spec == "loopbot.demo.population:mentions_recovery:0.7,loopbot.demo.population:punchy_opening:0.3"
    people = mix.assign(1000, seed=3)
    share = Counter(t.short for t in people)["mentions_recovery"] / 1000
    assert 0.65 < share < 0.75
    assert [t.short for t in mix.assign(48, seed=3)] == [t.short for t in people[:48]]  # the same people each time
    assert people != mix.assign(1000, seed=4)
    single = load_population("loopbot.demo.population:uses_list")
    assert single.spec == "loopbot.demo.population:uses_list" and single.tastes[0].likes is population.uses_list
    assert load_population(None).spec == population.DEFAULT
    assert load_population("short_answer:1,uses_list:3").tastes[1].weight == 0.75


@pytest.mark.parametrize("spec, message", [
    ("short_answer:0,uses_list:1", "must be above 0"),
    ("short_answer,short_answer", "named twice"),
    ("short_answer,,uses_list", "empty taste"),
    ("short_answer:0.5,no_such_taste:0.5", "has no function 'no_such_taste'"),
])
def test_a_bad_mixture_is_refused_in_one_clear_line(spec, message):
    with pytest.raises(UsageError, match=message):
        load_population(spec)


def test_feedback_modes_and_their_options():
    assert resolve("realistic") == REALISTIC == Behaviour(0.2, 0.1, 0.15, 0.5, 0.15)
    assert resolve("ideal") == IDEAL and IDEAL.vote_share == 1 and IDEAL.follow_up_liked == 0
    assert resolve("ideal", flip_share=0.3).flip_share == 0.3
    assert resolve("realistic", vote_share=None).vote_share == 0.2
    with pytest.raises(UsageError, match=r"--vote-share 1\.5: a share between 0 and 1"):
        resolve("realistic", vote_share=1.5)
    with pytest.raises(UsageError, match="--feedback 'perfect'"):
        resolve("perfect")
    assert "votes on 20% of replies, 10% of votes flipped" in REALISTIC.describe()


def _service(engine, settings):
    settings = settings.model_copy(deep=True)
    settings.feedback.arena_rate = 0.0
    settings.access.messages_per_minute = 100_000

    def script(messages, adapter):  # odd questions get a reply the tastes below like, even ones one they do not
        number = int(messages[-1]["content"].split()[1].rstrip("?")) if "Q" in messages[-1]["content"] else 0
        return "You will sleep well." if number % 2 else "Pacing is key."

    router = router_from_database(engine, settings, InstantBackend(script))
    return ChatService(engine, settings, router, rng=random.Random(0))


def likes_you(question, reply):
    return reply.startswith("You")


def likes_nothing(question, reply):
    return False


async def test_realistic_users_vote_sparsely_with_noise_retry_rarely_and_follow_up_after_what_they_liked(
        engine, settings):
    questions = [f"Q {i}?" for i in range(160)]
    behaviour = Behaviour(vote_share=0.3, flip_share=0.2, retry_share=0.3, follow_up_liked=0.8,
                          follow_up_disliked=0.1)
    traffic = Traffic(_service(engine, settings), likes_you, tag="real", seed=5, users=8, max_retries=1,
                      behaviour=behaviour, follow_ups=["And then?"])
    turns = await traffic.run(questions)
    firsts = [t.first for t in turns]
    assert [a.liked for a in firsts] == [i % 2 == 1 for i in range(160)]  # the true taste, voted or not
    votes = [a for t in turns for a in [*t.answers, *t.follow_ups] if a.vote is not None]
    read = sum(len(t.answers) + len(t.follow_ups) for t in turns)
    assert 0.18 * read < len(votes) < 0.42 * read
    flipped = [a for a in votes if (a.vote > 0) != a.liked]
    assert 0.05 * len(votes) < len(flipped) < 0.4 * len(votes)
    assert sum(crud.vote_counts(engine, persona="coach")) == len(votes)
    disliked = [t for t in turns if not t.first.liked]
    retried = [t for t in disliked if len(t.answers) > 1]
    assert 0.1 * len(disliked) < len(retried) < 0.5 * len(disliked)
    assert all(len(t.answers) == 1 for t in turns if t.first.liked)  # never 🔄 on a reply it liked
    with_gens = {g.id: g for g in _generations(engine)}
    assert all(with_gens[t.answers[1].generation_id].retry_of_id == t.first.generation_id for t in retried)
    after_liked = sum(1 for t in turns if t.answers[-1].liked and t.follow_up) / sum(t.answers[-1].liked for t in turns)
    after_disliked = (sum(1 for t in turns if not t.answers[-1].liked and t.follow_up)
                      / sum(not t.answers[-1].liked for t in turns))
    assert after_liked > 0.6 and after_disliked < 0.25
    follow = next(t.follow_up for t in turns if t.follow_up)
    gen = with_gens[follow.generation_id]
    assert gen.prompt[-1] == {"role": "user", "content": "And then?"} and len(gen.prompt) >= 4  # same conversation
    # after an answer to a follow-up the user may go on again, by the same chances ("And then?" gets a disliked
    # "Pacing is key.": follow_up_disliked = 0.1), up to 3 follow-ups
    chained = [t for t in turns if len(t.follow_ups) > 1]
    assert chained and len(chained) < 0.25 * sum(1 for t in turns if t.follow_ups)
    assert max(len(t.follow_ups) for t in turns) <= 3
    second = with_gens[chained[0].follow_ups[1].generation_id]
    assert len(second.prompt) > len(with_gens[chained[0].follow_ups[0].generation_id].prompt)
    summary = round_summary(turns)
    assert f"{len(flipped)} flipped" in summary and f"{sum(len(t.follow_ups) for t in turns)} follow-ups" in summary


def _generations(engine):
    from sqlmodel import Session, select

    with Session(engine) as s:
        return list(s.exec(select(Generation)))


async def test_the_same_seed_gives_the_same_users_and_choices(engine, settings):
    def run(tag):
        return Traffic(_service(engine, settings), [likes_nothing, likes_you], tag=tag, seed=9, users=4,
                       max_retries=1, behaviour=REALISTIC, follow_ups=["And then?"])

    def pattern(turns):
        return [(t.user[-5:], [(a.liked, a.vote) for a in t.answers], t.follow_up is not None) for t in turns]

    first = await run("a").run([f"Q {i}?" for i in range(40)])
    second = await run("a2").run([f"Q {i}?" for i in range(40)])
    assert [(t.user[-5:], t.question) for t in first] == [(t.user[-5:], t.question) for t in second]
    assert pattern(first) == pattern(second)
    # user0 and user2 keep the taste that likes nothing; user1 and user3 (the odd questions) like "You ..." replies
    assert not any(a.liked for t in first if t.user.endswith(("user0", "user2")) for a in t.answers)
    assert all(t.first.liked for t in first if t.user.endswith(("user1", "user3")))
    assert sum(1 for t in first if t.follow_up) > 0


async def test_ideal_users_vote_on_every_reply_never_wrong_and_never_follow_up(engine, settings):
    turns = await Traffic(_service(engine, settings), likes_you, tag="ideal", seed=1, users=4,
                          max_retries=1).run([f"Q {i}?" for i in range(20)])
    answers = [a for t in turns for a in t.answers]
    assert all(a.vote == (1 if a.liked else -1) for a in answers)
    assert all(len(t.answers) == 2 for t in turns if not t.first.liked)
    assert not any(t.follow_up for t in turns)
