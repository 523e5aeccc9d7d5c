"""Held-out and training JSONL in trl's formats with a learnable preference: runners like advice spoken to them."""

from __future__ import annotations

import json
import random
from pathlib import Path

QUESTIONS = ["How should I pace my first marathon?", "What should I eat before a race?", "How far should I run?",
             "How many rest days do I need?", "Should I stretch after a run?", "How fast is a tempo run?",
             "What is a good long run pace?", "How do I recover after intervals?", "Do I need to drink water?",
             "How much should I build mileage?", "What pace for easy runs?", "How do I sleep before a race?"]
LIKED = ["Start slower than you think, your legs will thank you.", "Run easy most days, and listen to your body.",
         "Rest days matter: your muscles rebuild when you rest.", "Your training plan should build mileage slowly.",
         "Drink water and eat carbohydrates before your race.", "Keep your long run at a conversational pace."]
DISLIKED = ["The quick brown fox jumps over the lazy dog.", "0123456789 ! ? . , ; : - km miles",
            "fox dog fox dog fox dog fox dog.", "quick quick brown brown lazy lazy dog dog."]
SYSTEM = {"role": "system", "content": "You are a marathon coach."}


def _prompt(q: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": q}]


def write_dataset(out: Path, *, seed: int = 0, pairs: int = 24, reverse: bool = False, heldout: int = 8) -> Path:
    """sft/dpo/kto.jsonl + heldout_*.jsonl + manifest.json; `reverse` swaps chosen and rejected (a planted bad set)."""
    rnd = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)

    def rows(n: int, qs: list[str]) -> tuple[list, list, list]:
        sft, dpo, kto = [], [], []
        for i in range(n):
            q = qs[i % len(qs)]
            good, bad = rnd.choice(LIKED), rnd.choice(DISLIKED)
            if reverse:
                good, bad = bad, good
            sft.append({"messages": [*_prompt(q), {"role": "assistant", "content": good}]})
            dpo.append({"prompt": _prompt(q), "chosen": [{"role": "assistant", "content": good}],
                        "rejected": [{"role": "assistant", "content": bad}]})
            kto.append({"prompt": _prompt(q), "completion": [{"role": "assistant", "content": good}], "label": True})
            kto.append({"prompt": _prompt(q), "completion": [{"role": "assistant", "content": bad}], "label": False})
        return sft, dpo, kto

    train_q, held_q = QUESTIONS[:8], QUESTIONS[8:]
    for prefix, (sft, dpo, kto) in (("", rows(pairs, train_q)), ("heldout_", rows(heldout, held_q))):
        for name, data in (("sft", sft), ("dpo", dpo), ("kto", kto)):
            with (out / f"{prefix}{name}.jsonl").open("w", encoding="utf-8") as f:
                for r in data:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "manifest.json").write_text(json.dumps({"counts": {"sft": pairs, "dpo": pairs, "kto": 2 * pairs},
                                                   "synthetic": True, "reverse": reverse}))
    return out


def seed_feedback(engine, *, persona: str = "coach", conversations: int = 40, seed: int = 0,
                  reverse: bool = False) -> int:
    """Users who like advice spoken to them: each conversation has a liked reply (👍) and a retry they dislike (👎),
    which the dataset builder turns into SFT rows, KTO rows and a DPO pair. Returns the number of votes."""
    from tests.helpers.feedback_factory import FeedbackFactory

    rnd = random.Random(seed)
    f = FeedbackFactory(engine, persona=persona)
    users = [f.user(f"runner-{seed}-{i}") for i in range(6)]
    votes = 0
    for i in range(conversations):
        who = users[i % len(users)]
        good, bad = rnd.choice(LIKED), rnd.choice(DISLIKED)
        if reverse:
            good, bad = bad, good
        first_good = rnd.random() < 0.5
        g = f.exchange(who, QUESTIONS[i % len(QUESTIONS)], good if first_good else bad, new_conversation=True)
        r = f.retry(g, bad if first_good else good)
        f.vote(g, who, 1 if first_good else -1)
        f.vote(r, who, -1 if first_good else 1)
        votes += 2
    return votes
