"""Runner questions for the demo's simulated users: runner profiles x question stems, split by stem.

The held-out split shares no question stem with the training split, so a better 👍 rate on it means the bot
learned something general, not the answers to the questions it was trained on.
"""

from __future__ import annotations

import random

PROFILES = [
    "I'm training for my first marathon.",
    "I'm a beginner and just started running three months ago.",
    "I'm 52 and training for a half marathon.",
    "I run about 40 km a week and want to run a faster marathon.",
    "I'm coming back from a calf strain.",
    "My marathon is in six weeks.",
    "I usually run in the early morning before work.",
    "I'm training for a 10K in the summer heat.",
    "I have only three days a week to train.",
    "I ran my first marathon last year in 4 hours 30.",
]

STEMS = [
    "How should I pace the first half of the race?",
    "How many days a week should I run?",
    "What should I eat the night before a long run?",
    "How long should my longest training run be?",
    "How do I avoid hitting the wall?",
    "Should I stretch before or after running?",
    "How much water should I drink during a long run?",
    "What should I do on rest days?",
    "How do I know if I'm overtraining?",
    "Is it okay to run with sore legs?",
    "How do I choose the right running shoes?",
    "What is a tempo run and should I do them?",
    "How should I taper before race day?",
    "How can I run faster without getting injured?",
    "What should I eat on race morning?",
    "How do I deal with side stitches?",
    "Should I do strength training, and what kind?",
    "How do I stay motivated when training gets hard?",
    "What should I do the day after a marathon?",
    "How do I breathe properly while running?",
    "Are energy gels necessary, and when should I take them?",
    "How do I build up my weekly mileage safely?",
    "What pace should my easy runs be?",
    "How much sleep do I need while training?",
    "How do I run well in hot weather?",
    "Should I run on a treadmill or outside?",
    "How do I handle nerves before a race?",
    "What are interval workouts and how often should I do them?",
    "How do I prevent blisters?",
    "What should I do if my knee hurts after runs?",
    "How important is warming up before a run?",
    "Can I drink coffee before a race?",
    "How do I pick a realistic goal time?",
    "What should I carry on a long run?",
    "How do I recover faster between hard workouts?",
    "Should I run every day?",
    "How do I improve my running form?",
    "What should I wear for a race in cold weather?",
    "How do I run up hills more efficiently?",
    "How should I split my race into sections mentally?",
]

HELDOUT_EVERY = 4  # every 4th stem (10 of 40) is held out


def _questions(stems: list[str]) -> list[str]:
    return [f"{profile} {stem}" for stem in stems for profile in PROFILES]


def train_questions() -> list[str]:
    """Questions whose stems the trainer may see (300)."""
    return _questions([s for i, s in enumerate(STEMS) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1])


def heldout_questions() -> list[str]:
    """Questions with stems never asked before measurement (100); only used to measure the live 👍 rate."""
    return _questions([s for i, s in enumerate(STEMS) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1])


def follow_up_questions() -> list[str]:
    """Short questions a user asks next in the same conversation: the training stems alone (30)."""
    return [s for i, s in enumerate(STEMS) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]


def sample(questions: list[str], n: int, *, seed: int) -> list[str]:
    """n questions without repeats while possible (then cycling), in a seeded order."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        batch = list(questions)
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out
