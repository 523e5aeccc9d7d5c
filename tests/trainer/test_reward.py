"""The reward model: trained from votes on a planted taste it ranks held-out replies by it; at chance it is not
used; a killed run leaves the previous state in use; its pairs and labels reach the build and the manifest."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from loopbot.trainer.datasets import build_datasets
from loopbot.trainer.reward import (
    USABLE,
    RewardTrainingFailed,
    current_reward_model,
    gate,
    list_reward_models,
    ranking_accuracy,
    train_reward_version,
    training_pairs,
)
from loopbot.trainer.reward_pairs import RewardRows
from tests.helpers.feedback_factory import FeedbackFactory

SYSTEM = {"role": "system", "content": "You are a marathon coach."}
QUESTIONS = ["How should I pace my first marathon?", "What should I eat before a race?", "How far should I run?",
             "How many rest days do I need?", "Should I stretch after a run?", "How fast is a tempo run?",
             "What is a good long run pace?", "How do I recover after intervals?", "Do I need to drink water?",
             "How much should I build mileage?", "What pace for easy runs?", "How do I sleep before a race?"]
# the planted taste: a reply that mentions recovery is liked, the same advice without it is not
LIKED = ["Plan recovery days, your legs will thank you.", "After intervals, recovery matters most.",
         "Easy runs help recovery and build mileage.", "Sleep well: recovery is training too.",
         "Run easy, then a recovery week.", "Stretch for recovery after a run.", "Good recovery makes you faster.",
         "Take a recovery day and drink water."]
DISLIKED = ["Start slower than you think, your legs will thank you.", "After intervals, run easy most days.",
            "Easy runs build mileage slowly.", "Sleep well and listen to your body.", "Run easy, then a tempo week.",
            "Stretch well after a run.", "Good pacing makes you faster.", "Take a rest day and drink water."]
# the tiny model learns in seconds at a rate a 135M model would not take
FAST_REWARD = {"learning_rate": 2e-3, "max_steps": 40, "max_epochs": 8, "batch_size": 8, "min_heldout_comparisons": 16}


def _msg(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _write(out: Path, name: str, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def planted_dataset(out: Path, *, seed: int = 0, chance: bool = False) -> Path:
    """Training votes on the planted taste: a few pairs and many single votes; held-out votes on replies and
    questions the training never saw. `chance`: each held-out reply is both liked and disliked (on one prompt), so
    no model can rank them better than chance (accuracy exactly 0.5)."""
    rnd = random.Random(seed)
    train_q, held_q = QUESTIONS[:8], QUESTIONS[8:]
    train_liked, train_disliked = LIKED[:5], DISLIKED[:5]
    held_liked, held_disliked = LIKED[5:], DISLIKED[5:]
    dpo = [{"prompt": [SYSTEM, {"role": "user", "content": rnd.choice(train_q) + " Thanks."}],
            "chosen": _msg(rnd.choice(train_liked)), "rejected": _msg(rnd.choice(train_disliked))} for _ in range(6)]
    kto = [{"prompt": [SYSTEM, {"role": "user", "content": q}], "completion": _msg(text), "label": label}
           for q in train_q for text, label in ((rnd.choice(train_liked), True), (rnd.choice(train_disliked), False))]
    held = []
    for q in held_q:
        for liked, disliked in zip(held_liked, held_disliked, strict=True):
            prompt = [SYSTEM, {"role": "user", "content": q}]
            if chance:
                held += [{"prompt": prompt, "completion": _msg(liked), "label": True},
                         {"prompt": prompt, "completion": _msg(liked), "label": False}]
            else:
                held += [{"prompt": prompt, "completion": _msg(liked), "label": True},
                         {"prompt": prompt, "completion": _msg(disliked), "label": False}]
    _write(out, "dpo", dpo)
    _write(out, "kto", kto)
    _write(out, "heldout_kto", held)
    _write(out, "heldout_dpo", [])
    (out / "manifest.json").write_text(json.dumps({"build_id": f"planted-{seed}", "feedback_id_max": 0}))
    return out


@pytest.fixture
def reward_settings(train_settings):
    for k, v in FAST_REWARD.items():
        setattr(train_settings.trainer.reward, k, v)
    train_settings.trainer.lora.r = 8
    return train_settings


def test_pairs_come_from_the_pairs_and_the_unpaired_votes(tmp_path):
    d = planted_dataset(tmp_path / "d")
    rows, counts = training_pairs(d, cross_pairs_per_vote=2)
    assert counts["pairs"] == 6 and counts["unpaired_liked"] == 8 and counts["unpaired_disliked"] == 8
    assert 8 * 2 <= counts["cross_pairs"] <= 8 * 2 * 2 and len(rows) == 6 + counts["cross_pairs"]
    for r in rows:  # chosen: a liked reply, rejected: a disliked one, each with its own prompt
        assert r["chosen"][-1]["content"] in LIKED and r["rejected"][-1]["content"] in DISLIKED
        assert r["chosen"][0] == SYSTEM and r["chosen"][1]["role"] == "user"
    assert training_pairs(d, cross_pairs_per_vote=0)[1]["cross_pairs"] == 0


def test_ranking_accuracy_and_the_gate(settings):
    assert ranking_accuracy([3, 2, 1, 0], [True, True, False, False]) == (1.0, 4)
    assert ranking_accuracy([1, 1, 1, 1], [True, True, False, False]) == (0.5, 4)
    assert ranking_accuracy([0, 2, 1, 3], [True, True, False, False]) == (0.25, 4)
    assert ranking_accuracy([1, 2], [True, True]) == (None, 0)
    cfg = settings.trainer.reward
    assert gate({"accuracy": 0.9, "comparisons": 100}, cfg)[0]
    passed, why = gate({"accuracy": 0.55, "comparisons": 100}, cfg)
    assert not passed and "min_heldout_accuracy" in why
    passed, why = gate({"accuracy": 1.0, "comparisons": cfg.min_heldout_comparisons - 1}, cfg)
    assert not passed and "min_heldout_comparisons" in why


@pytest.mark.slow  # ~40 s: two reward models
async def test_a_reward_model_trained_on_a_planted_taste_ranks_heldout_replies_by_it(loopbot, reward_settings,
                                                                                     tiny_model_dir, tmp_path):
    assert current_reward_model(reward_settings, "coach") is None
    r1 = await train_reward_version(loopbot.engine, reward_settings, "coach", base_model=tiny_model_dir,
                                    dataset_dir=planted_dataset(tmp_path / "planted"))
    held = r1.info["heldout"]
    print("planted taste:", held, {k: v for k, v in r1.info["train"].items() if k != "losses"})
    assert held["comparisons"] == 4 * 3 * 4 * 3 and held["accuracy"] >= 0.8, held
    assert held["mean_liked"] > held["mean_disliked"]
    assert r1.usable and r1.info["gate"]["passed"] and (r1.path / USABLE).is_file()
    assert r1.path == reward_settings.data_dir / "reward" / "coach" / "r1"
    assert current_reward_model(reward_settings, "coach").version == 1
    train = r1.info["train"]
    assert train["pairs"] == 6 and train["cross_pairs"] >= 16 and train["steps"] > 0

    # the scorer serving and the pair maker use ranks an unseen reply with the marker above one without
    from loopbot.serving.rerank import RewardScorer

    scorer = RewardScorer(tiny_model_dir, r1.path)
    prompt = [SYSTEM, {"role": "user", "content": "Any tips for my week?"}]
    good, bad = scorer.score([(prompt, "A recovery run helps."), (prompt, "A tempo run helps.")])
    assert good > bad

    # a version at chance is kept for inspection but never used: the usable one stays r1
    r2 = await train_reward_version(loopbot.engine, reward_settings, "coach", base_model=tiny_model_dir,
                                    dataset_dir=planted_dataset(tmp_path / "chance", chance=True))
    assert r2.version == 2 and r2.info["heldout"]["accuracy"] == 0.5
    assert not r2.usable and not (r2.path / USABLE).exists() and "min_heldout_accuracy" in r2.info["gate"]["reason"]
    assert current_reward_model(reward_settings, "coach").version == 1
    assert [(r.version, r.usable) for r in list_reward_models(reward_settings, "coach")] == [(1, True), (2, False)]


async def test_a_reward_model_at_chance_is_not_used(loopbot, reward_settings, tiny_model_dir, tmp_path):
    r1 = await train_reward_version(loopbot.engine, reward_settings, "coach", base_model=tiny_model_dir,
                                    dataset_dir=planted_dataset(tmp_path / "chance", chance=True))
    assert r1.info["heldout"]["accuracy"] == 0.5 and not r1.usable
    assert current_reward_model(reward_settings, "coach") is None


async def test_a_killed_reward_run_leaves_nothing_new_in_use(loopbot, reward_settings, tiny_model_dir, tmp_path):
    root = reward_settings.data_dir / "reward" / "coach"
    (root / "r1").mkdir(parents=True)  # the state before: r1 in use
    (root / "r1" / "reward.json").write_text(json.dumps({"heldout": {"accuracy": 0.9}}))
    (root / "r1" / USABLE).write_text("{}")
    reward_settings.trainer.reward.max_steps = 100_000  # long enough to be killed mid-training
    reward_settings.trainer.reward.max_epochs = 10_000
    pids: list[int] = []
    task = asyncio.create_task(train_reward_version(loopbot.engine, reward_settings, "coach",
                                                    base_model=tiny_model_dir, on_spawn=pids.append,
                                                    dataset_dir=planted_dataset(tmp_path / "planted")))
    log = reward_settings.data_dir / "logs" / "reward" / "coach-r2.log"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if log.is_file() and "reward model:" in log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("reward training never started")
    await asyncio.sleep(1.0)
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(RewardTrainingFailed, match="killed by signal 9"):
        await asyncio.wait_for(task, 60)
    assert current_reward_model(reward_settings, "coach").version == 1
    assert sorted(p.name for p in root.iterdir()) == ["r1"]  # no r2/, no partial directory


class _MarkerScorer:
    """A stand-in reward model: replies mentioning recovery score high, noise low."""

    def score(self, items):
        texts = [r if isinstance(r, str) else r[-1]["content"] for _, r in items]
        return [(2.0 if "recovery" in t else 0.0) - len(t) / 1000 for t in texts]


def _sampler(prompts, n):
    return [[f"candidate {i} for {p[-1]['content']}" + "!" * i for i in range(n)] for p in prompts]


def test_reward_pairs_and_labels_reach_the_build_and_the_manifest(engine, settings):
    settings.trainer.dataset.heldout_fraction = 0.0
    settings.trainer.reward.label_unvoted = True
    settings.trainer.reward.label_quantile = 0.25
    settings.trainer.signals.ended = False  # the unvoted replies below are for the reward model to label
    f = FeedbackFactory(engine)
    ana = f.user("ana")
    liked = [f.exchange(ana, q, text, new_conversation=True) for q, text in zip(QUESTIONS[:4], LIKED, strict=False)]
    for g in liked:
        f.vote(g, ana, +1)  # single liked votes: no pair of their own
    disliked = f.exchange(ana, QUESTIONS[5], DISLIKED[0], new_conversation=True)
    f.vote(disliked, ana, -1)
    for q, text in zip(QUESTIONS[6:], LIKED[4:] + DISLIKED[4:], strict=False):  # nobody voted on these
        f.exchange(ana, q, text, new_conversation=True)

    plain = build_datasets(engine, settings, "coach")
    assert plain.manifest["signals"]["reward_pairs"] == 0 and plain.counts["dpo"] == 0

    rows = RewardRows(settings, "coach", _MarkerScorer(), _sampler)
    build = build_datasets(engine, settings, "coach", augment=rows)
    signals = build.manifest["signals"]
    assert signals["reward_pairs"] == 4 == build.counts["dpo"]
    pairs = [json.loads(line) for line in build.paths["dpo"].read_text().splitlines()]
    assert sorted(p["chosen"][0]["content"] for p in pairs) == sorted(LIKED[:4])
    # the worst of the candidates: the longest noise (the stand-in docks length)
    assert all(p["rejected"][0]["content"].startswith(f"candidate {settings.trainer.reward.candidates - 1}")
               for p in pairs)
    assert build.manifest["sources"]["dpo"] == {"reward_model": 4}
    # six unvoted replies: the top and bottom quarter (one each) become KTO rows
    assert signals["reward_labels"] == 2
    kto = [json.loads(line) for line in build.paths["kto"].read_text().splitlines()]
    labelled = {r["completion"][0]["content"]: r["label"] for r in kto[-2:]}
    assert list(labelled.values()).count(True) == 1 and list(labelled.values()).count(False) == 1
    assert all(("recovery" in t) == lab for t, lab in labelled.items())

    settings.trainer.reward.label_unvoted = False
    settings.trainer.reward.make_pairs = False
    off = build_datasets(engine, settings, "coach", augment=RewardRows(settings, "coach", _MarkerScorer(), _sampler))
    assert off.manifest["signals"]["reward_pairs"] == 0 and off.manifest["signals"]["reward_labels"] == 0


@pytest.mark.slow  # ~90 s: a reward model, sampled rivals, then a whole cycle
async def test_a_cycle_with_the_reward_model_trains_it_first_and_its_pairs_reach_the_build(loopbot, reward_settings):
    from loopbot.storage import crud
    from loopbot.trainer.pipeline import run_cycle
    from tests.trainer.synthetic import LIKED as SYN_LIKED
    from tests.trainer.synthetic import QUESTIONS as SYN_QUESTIONS
    from tests.trainer.synthetic import seed_feedback

    reward_settings.trainer.reward.enabled = True
    reward_settings.trainer.reward.candidates = 2
    seed_feedback(loopbot.engine, conversations=40)
    f = FeedbackFactory(loopbot.engine)
    fans = [f.user(f"fan-{i}") for i in range(3)]
    for i in range(12):  # single liked votes, in no pair: the reward model gives them rivals
        g = f.exchange(fans[i % 3], SYN_QUESTIONS[i], SYN_LIKED[i % len(SYN_LIKED)] + f" ({i})",
                       new_conversation=True)
        f.vote(g, fans[i % 3], +1)
    result = await run_cycle(loopbot, "coach")
    assert result.status in ("promoted", "rejected"), result.reason
    run = crud.get_training_run(loopbot.engine, run_id=result.run_id)
    assert [s["step"] for s in run.steps][:3] == ["reward", "build", "train"]
    reward = run.steps[0]
    print("cycle reward step:", reward)
    assert reward["outcome"] == "trained" and reward["usable"], reward
    assert reward["heldout"]["accuracy"] >= 0.8 and reward["current"] == "coach-r1"
    manifest = json.loads((Path(run.steps[1]["path"]) / "manifest.json").read_text())
    print("cycle build:", manifest["signals"], manifest["counts"], manifest["notes"])
    assert manifest["signals"]["reward_pairs"] > 0, manifest
    assert manifest["sources"]["dpo"]["reward_model"] == manifest["signals"]["reward_pairs"]
    # the reward model's own build is no dataset build of the persona's (new votes since the last build count on)
    assert crud.latest_event(loopbot.engine, kind="dataset_build", persona="coach").data["build_id"] == \
        manifest["build_id"]
