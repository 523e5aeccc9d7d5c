"""Best-of-n by the reward model: what it costs (latency) and what it adds (👍 rate) on a planted taste.

    python bench/bench_rerank.py [--n 4] [--prompts 24]

On the tiny test model, taught to answer coach questions with or without the word "recovery" (about half each):
simulated users like a reply that mentions recovery. A reward model is trained (the real worker code, in process)
on votes on sampled replies to training questions; then held-out questions are answered through the real router
and local backend (a) plainly (best-of-1) and (b) best-of-n (`serving.rerank.BestOfN`, n samples, the best sent).
Rows: seconds per reply best-of-n vs best-of-1, and the liked share of sent replies with vs without reranking.
`run()` reads LOOPBOT_BENCH_RERANK_N and LOOPBOT_BENCH_RERANK_PROMPTS."""

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

SYSTEM = {"role": "system", "content": "You are a marathon coach."}
TRAIN_Q = ["How should I pace my first marathon?", "What should I eat before a race?", "How far should I run?",
           "How many rest days do I need?", "Should I stretch after a run?", "How fast is a tempo run?",
           "What is a good long run pace?", "How do I recover after intervals?"]
HELD_Q = ["Do I need to drink water?", "How much should I build mileage?", "What pace for easy runs?",
          "How do I sleep before a race?", "Any advice for hills?", "How do I taper?"]
WITH = ["Plan recovery days, your legs will thank you.", "After intervals, recovery matters most.",
        "Easy runs help recovery and build mileage.", "Sleep well: recovery is training too."]
WITHOUT = ["Start slower than you think, your legs will thank you.", "After intervals, run easy most days.",
           "Easy runs build mileage slowly.", "Sleep well and listen to your body."]


def liked(text: str) -> bool:
    return "recovery" in text.lower()


def _teach(model_dir: Path) -> Path:
    from loopbot.demo.tiny import build_tiny_model, teach_tiny_model

    build_tiny_model(model_dir)
    convs = [[SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
             for q in TRAIN_Q + HELD_Q for a in WITH + WITHOUT]
    return teach_tiny_model(model_dir, convs, steps=120)


async def _sample(router, prompts: list[list[dict]], n: int, sampling) -> list[list[str]]:
    out = []
    for p in prompts:
        out.append([(await router.complete("coach", p, sampling=sampling))[0] for _ in range(n)])
    return out


async def measure(n: int = 4, prompts: int = 24, seed: int = 0) -> dict:
    import torch

    from loopbot.serving.base import SamplingParams
    from loopbot.serving.local import LocalBackend
    from loopbot.serving.rerank import BestOfN
    from loopbot.serving.router import Router
    from loopbot.trainer.reward import RewardJob
    from loopbot.trainer.reward_worker import train_reward

    torch.set_num_threads(1)
    rnd = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    model = _teach(work / "tiny")
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=24, seed=None)
    backend = LocalBackend(model, device="cpu")
    router = Router(backend, routes={"coach": None})
    try:
        # votes: 4 sampled replies to each training question, each judged by the taste
        t0 = time.monotonic()
        train_prompts = [[SYSTEM, {"role": "user", "content": q}] for q in TRAIN_Q for _ in range(2)]
        samples = await _sample(router, train_prompts, 4, sampling)
        data = work / "data"
        data.mkdir()
        kto = [{"prompt": p, "completion": [{"role": "assistant", "content": t}], "label": liked(t)}
               for p, texts in zip(train_prompts, samples, strict=True) for t in texts if t.strip()]
        held = [[SYSTEM, {"role": "user", "content": q}] for q in HELD_Q]
        held_rows = [{"prompt": p, "completion": [{"role": "assistant", "content": t}], "label": liked(t)}
                     for p, texts in zip(held, await _sample(router, held, 4, sampling), strict=True) for t in texts]
        for name, rows in (("kto", kto), ("dpo", []), ("heldout_kto", held_rows), ("heldout_dpo", [])):
            (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        job = RewardJob(persona="coach", base_model=str(model), dataset_dir=str(data), out_dir=str(work / "r1"),
                        reward={"cross_pairs_per_vote": 4, "learning_rate": 2e-3, "max_steps": 60, "max_epochs": 4,
                                "batch_size": 8},
                        lora={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}, seed=seed,
                        device="cpu")
        info = train_reward(job)
        prep_s = time.monotonic() - t0
        best = BestOfN(router, n=n, locate=lambda _p: (str(model), str(work / "r1")))
        questions = [[SYSTEM, {"role": "user", "content": rnd.choice(HELD_Q)}] for _ in range(prompts)]
        await best.complete("coach", questions[0], sampling=sampling)  # load the scorer before timing
        figures = {}
        for label, r in (("best_of_1", router), (f"best_of_{n}", best)):
            t = time.monotonic()
            texts = [(await r.complete("coach", q, sampling=sampling))[0] for q in questions]
            figures[label] = {"seconds_per_reply": (time.monotonic() - t) / prompts,
                              "liked_share": sum(map(liked, texts)) / prompts}
        return {"n": n, "prompts": prompts, "reward_heldout": info["heldout"], "votes": len(kto),
                "prep_seconds": round(prep_s, 1), **figures}
    finally:
        await backend.aclose()


def rows_from(result: dict) -> list[dict]:
    n, one = result["n"], result["best_of_1"]
    many = result[f"best_of_{n}"]
    acc = result["reward_heldout"]["accuracy"]
    return [
        {"name": f"best-of-{n} vs best-of-1: seconds per reply (tiny model, {result['prompts']} prompts)",
         "figure": round(many["seconds_per_reply"], 4), "baseline": round(one["seconds_per_reply"], 4), "unit": "s",
         "goal": f"ratio <= {n}"},
        {"name": f"best-of-{n} vs best-of-1: liked share of sent replies (planted taste; reward model held-out "
                 f"accuracy {acc})",
         "figure": round(many["liked_share"], 3), "baseline": round(one["liked_share"], 3), "unit": "share",
         "goal": "ratio > 1"},
    ]


def run() -> list[dict]:
    n = int(os.environ.get("LOOPBOT_BENCH_RERANK_N", "4"))
    prompts = int(os.environ.get("LOOPBOT_BENCH_RERANK_PROMPTS", "24"))
    return rows_from(asyncio.run(measure(n=n, prompts=prompts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=24)
    args = parser.parse_args()
    result = asyncio.run(measure(n=args.n, prompts=args.prompts))
    print(json.dumps(result, indent=2))
    for row in rows_from(result):
        print(f"{row['name']}: {row['figure']} vs {row['baseline']} {row['unit']}")


if __name__ == "__main__":
    main()
