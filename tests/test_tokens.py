"""The one token estimate: generous, and the chat prompt and the training examples count a conversation alike."""

from __future__ import annotations

from loopbot.base.tokens import estimate_tokens
from loopbot.bot.history import build_prompt
from loopbot.trainer.cleaning import fit_prompt


def test_the_estimate_is_about_three_bytes_a_token_so_accents_cost_more():
    assert estimate_tokens("") == 0
    assert estimate_tokens("x" * 300) == 100
    assert estimate_tokens("á" * 300) == 200  # two UTF-8 bytes each: non-English text is never undercounted
    assert estimate_tokens("\ud800") == 1  # a lone surrogate (bad input from a platform) does not raise


def test_the_bot_and_the_trainer_keep_the_same_history_under_the_same_budget():
    system = "You are a running coach."
    turns = [("user", "How do I start running?"), ("assistant", "Easy runs, three times a week."),
             ("user", "And after a month?"), ("assistant", "Add a longer run on the weekend, ¡despacio!"),
             ("user", "What about shoes?")]
    prompt = [{"role": "system", "content": system}] + [{"role": r, "content": t} for r, t in turns]
    kept_lengths = set()
    for budget in range(20, 120):
        trainer = fit_prompt(prompt, 0, budget, estimate_tokens)
        if trainer is not None:
            assert build_prompt(system, turns, budget) == trainer, budget
            kept_lengths.add(len(trainer))
    assert kept_lengths == {2, 4, 6}  # the budgets above cover every cut: the newest turn, two, all
