"""Simulated users' tastes and how `--users module:function` is loaded."""

import pytest

from loopbot.base.errors import UsageError
from loopbot.demo import population, questions


def test_default_population_reads_only_the_first_sentence():
    likes = population.speaks_to_runner
    assert likes("q", "You should start slower than you think. Then speed up.")
    assert likes("q", "Great question! Your legs need rest.") is False  # "Great question!" is the first sentence
    assert likes("q", "Pacing matters a lot. You should start slow.") is False
    assert likes("q", "If you're new, run easy.")
    assert likes("q", "Youth running clubs are great.") is False  # a word, not a prefix


def test_other_populations_reward_content_and_style():
    assert population.recommends_professional("q", "See a physiotherapist if it persists.")
    assert not population.recommends_professional("q", "Run easy and drink water.")
    assert population.uses_list("q", "Tips:\n1. Run easy\n2. Sleep well")
    assert population.uses_list("q", "- one\n- two")
    assert not population.uses_list("q", "Run easy. Sleep well.")
    assert population.punchy_opening("q", "Start slower than you think. Then, over the last ten kilometres, "
                                          "let the pace come to you if your legs still feel fresh.")
    assert not population.punchy_opening("q", "Pacing a first marathon is all about patience, so you should start "
                                              "a little slower than your goal pace. Then speed up.")
    assert not population.punchy_opening("q", "")


def returns_text(question, reply):
    return "yes"


def test_users_spec_is_loaded_or_refused_in_one_clear_line():
    assert population.load_preference(None) == (population.DEFAULT, population.speaks_to_runner)
    spec, func = population.load_preference("uses_list")
    assert spec == "loopbot.demo.population:uses_list" and func is population.uses_list
    with pytest.raises(UsageError, match="cannot import module 'no_such_module_x'"):
        population.load_preference("no_such_module_x:f")
    with pytest.raises(UsageError, match="has no function 'nope'"):
        population.load_preference("loopbot.demo.population:nope")
    with pytest.raises(UsageError, match=r"calling it with \(question, reply\) failed: TypeError"):
        population.load_preference("loopbot.demo.population:first_sentence")
    with pytest.raises(UsageError, match="must return True or False, returned str"):
        population.load_preference("tests.demo.test_population:returns_text")
    with pytest.raises(UsageError, match="expected module:function"):
        population.load_preference("loopbot.demo.population:")


def test_heldout_questions_share_no_stem_with_training_questions():
    train, heldout = questions.train_questions(), questions.heldout_questions()
    assert len(train) == 300 and len(heldout) == 100
    stems = {s for s in questions.STEMS if any(q.endswith(s) for q in train)}
    assert stems and not any(q.endswith(s) for q in heldout for s in stems)
    picked = questions.sample(heldout, 150, seed=3)
    assert len(picked) == 150 and len(set(picked[:100])) == 100
    assert picked == questions.sample(heldout, 150, seed=3)
