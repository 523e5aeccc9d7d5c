"""Does one LoRA DPO run with config.toml's [trainer] defaults move the model? Baseline: trl's default lr (1e-6).

    python bench/bench_training.py [--model smollm2|tiny] [--steps N]

Both runs train the same pairs through the real worker process (trainer.launch) and are scored by
trainer.evaluate on held-out pairs (other questions): preference accuracy and mean log-prob margin, plus the
degeneracy figures of greedy replies. `run()` reads LOOPBOT_BENCH_TRAIN_MODEL (default smollm2; `tiny` = the test
model) and LOOPBOT_BENCH_TRAIN_STEPS (default 10 steps for `loopbot bench`, ~2 x 2 min on an idle 2-core machine;
the command line uses config.toml's trainer.dpo.max_steps unless --steps is given)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOPICS = [("pace your first marathon", "start slower than race pace", "the first half feels easy"),
          ("eat before a race", "eat rice or oats three hours before", "carbohydrates fill the tank"),
          ("recover after intervals", "jog ten minutes and drink water", "muscles rebuild with rest"),
          ("build weekly mileage", "add about ten percent a week", "tendons adapt slowly"),
          ("run in the heat", "slow down and drink often", "heat raises the heart rate"),
          ("choose running shoes", "try several pairs in a shop", "comfort prevents blisters"),
          ("sleep before a race", "go to bed at the usual hour", "nerves are normal"),
          ("run hills", "shorten the stride going up", "effort matters more than pace"),
          ("taper for a marathon", "cut volume by a third", "fresh legs race faster"),
          ("avoid cramps", "take salt with water", "sodium keeps muscles working"),
          ("do a long run", "keep it conversational", "time on feet builds endurance"),
          ("warm up", "jog easy for ten minutes", "warm muscles move better"),
          ("run a tempo", "hold a comfortably hard pace", "it raises the threshold"),
          ("stretch", "stretch gently after running", "tight calves recover"),
          ("handle a side stitch", "breathe out slowly and ease off", "it passes in a minute"),
          ("run in the rain", "wear a cap and light layers", "wet cotton chafes")]


def pairs_dataset(out: Path, *, heldout: int = 6, seed: int = 0) -> Path:
    """Users who like advice spoken to them ("You ... your ..."), not the same advice in the third person."""
    rnd = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    system = {"role": "system", "content": "You are an experienced marathon coach."}
    rows = []
    for topic, advice, reason in TOPICS:
        for ask in (f"How should I {topic}?", f"Any tips to {topic}?"):
            chosen = f"You should {advice}. Your body will thank you: {reason}."
            rejected = f"Runners should {advice}. In general, {reason}."
            rows.append({"prompt": [system, {"role": "user", "content": ask}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
    held_topics = {t for t, _, _ in rnd.sample(TOPICS, heldout)}
    train = [r for r in rows if not any(t in r["prompt"][1]["content"] for t in held_topics)]
    held = [r for r in rows if any(t in r["prompt"][1]["content"] for t in held_topics)]
    for name, data in (("dpo", train), ("heldout_dpo", held)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    (out / "heldout_sft.jsonl").write_text("".join(json.dumps({"messages": r["prompt"] + r["chosen"]}) + "\n"
                                                   for r in held))
    return out


def _settings(data_dir: Path, model: str):
    from loopbot.base.config import load_settings

    overrides = {"data_dir": str(data_dir), "trainer.judge.prompts": 8, "personas.coach.sampling.max_tokens": 48,
                 "trainer.gate.min_preference_accuracy_gain": 0.02}
    if model != "smollm2":
        overrides["models.smollm2.path"] = model
    return load_settings(ROOT / "config.toml", env={}, overrides=overrides, check_secrets=False)


def measure(model: str = "smollm2", steps: int | None = None) -> dict:
    from loopbot.storage.db import make_engine, upgrade
    from loopbot.trainer.base_model import base_model_dir
    from loopbot.trainer.evaluate import evaluate_candidate
    from loopbot.trainer.launch import train_new_version

    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    if model == "tiny":
        from testkit.tiny_model import build_tiny_model

        model = str(build_tiny_model(tmp / "tiny"))
    settings = _settings(tmp / "data", model)
    if model == "smollm2":  # reuse a converted copy from the repo's data dir if there is one
        settings.data_dir = ROOT / "data" if (ROOT / "data" / "models").is_dir() else settings.data_dir
    base = base_model_dir(settings, "coach")
    settings.data_dir = tmp / "data"
    if steps:
        settings.trainer.dpo.max_steps = steps
    data = pairs_dataset(tmp / "pairs")
    engine = make_engine(f"sqlite:///{tmp}/bench.db")
    upgrade(engine)
    results = {}
    for label, lr in (("config", settings.trainer.dpo.learning_rate), ("trl_default", 1e-6)):
        settings.trainer.dpo.learning_rate = lr
        t0 = time.monotonic()
        trained = asyncio.run(train_new_version(engine, settings, "coach", dataset_dir=data, base_model=base,
                                                method="dpo", start_adapter=None, parent_version=None))
        train_s = time.monotonic() - t0
        report = evaluate_candidate(settings, "coach", dataset_dir=data, base_model=base,
                                    candidate_path=str(trained.path), live_path=None)
        stage = trained.stages[0]
        results[label] = {"lr": lr, "train_s": round(train_s, 1), "steps": stage["steps"],
                          "s_per_step": round(stage["seconds"] / max(stage["steps"], 1), 2),
                          "candidate": report["variants"]["candidate"], "base": report["variants"]["base"],
                          "samples": report["samples"][:2]}
    return {"model": str(base), "pairs": sum(1 for _ in open(data / "dpo.jsonl")),
            "heldout_pairs": sum(1 for _ in open(data / "heldout_dpo.jsonl")), "runs": results}


def run() -> list[dict]:
    m = measure(os.environ.get("LOOPBOT_BENCH_TRAIN_MODEL", "smollm2"),
                int(os.environ.get("LOOPBOT_BENCH_TRAIN_STEPS") or 10))
    cfg, trl = m["runs"]["config"], m["runs"]["trl_default"]
    return [
        {"name": f"DPO with config lr {cfg['lr']:g} vs trl default 1e-6: held-out margin gain over base (nats)",
         "figure": cfg["candidate"]["preference_margin"] - cfg["base"]["preference_margin"],
         "baseline": max(trl["candidate"]["preference_margin"] - trl["base"]["preference_margin"], 1e-6),
         "goal": "ratio >= 10"},
        {"name": "DPO held-out preference accuracy: config defaults vs base model",
         "figure": cfg["candidate"]["preference_accuracy"], "baseline": cfg["base"]["preference_accuracy"],
         "goal": "above the base model", "met": cfg["candidate"]["preference_accuracy"] >
         cfg["base"]["preference_accuracy"]},
        {"name": "DPO step time: config lr run vs trl-default lr run (same data and steps)",
         "figure": cfg["s_per_step"], "baseline": trl["s_per_step"], "unit": "s/step"},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    print(json.dumps(measure(args.model, args.steps), indent=2, ensure_ascii=False))
