"""Local backend vs plain `model.generate`, and hot swaps under load; every ratio is measured in this one run.

Model: $BENCH_MODEL (a directory), else the offline SmolLM2 copy if `loopbot model fetch` already made it under
./data/models, else a tiny random model built on the spot (then the figures say little about real models).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NEW_TOKENS = 32
CONCURRENT = 8
SWAPS = 20
QUESTIONS = ["How should I pace my first marathon?", "What should I eat the night before a race?",
             "How many rest days do I need each week?", "Is it fine to run with sore legs?",
             "How do I avoid hitting the wall at mile 20?", "What is a tempo run?",
             "How long should my longest training run be?", "Should I drink water at every station?"]


def _model_dir(work: Path) -> tuple[str, Path]:
    if os.environ.get("BENCH_MODEL"):
        return Path(os.environ["BENCH_MODEL"]).name, Path(os.environ["BENCH_MODEL"])
    smollm2 = ROOT / "data" / "models" / "smollm2-135m-instruct"
    if (smollm2 / "model.safetensors").is_file():
        return "SmolLM2-135M", smollm2
    from tests.helpers.tiny_model import build_tiny_model

    return "tiny random model", build_tiny_model(work / "tiny", hidden=128)


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


def _plain_generate(model_dir: Path, prompts: list[list[dict]]) -> tuple[float, int, list[float]]:
    """One request after another with plain transformers generate: (seconds, new tokens, per-request seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokens, each = 0, []
    start = time.perf_counter()
    for messages in prompts:
        t0 = time.perf_counter()
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)
        tokens += out.shape[1] - enc["input_ids"].shape[1]
        each.append(time.perf_counter() - t0)
    return time.perf_counter() - start, tokens, each


async def _backend_runs(model_dir: Path) -> dict:
    from serving.base import SamplingParams, complete
    from serving.local import LocalBackend

    greedy = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS)
    backend = LocalBackend(model_dir, max_batch_size=CONCURRENT, batch_wait_ms=5)
    await backend.ready()
    await complete(backend, _messages(0), sampling=SamplingParams(temperature=0, max_tokens=2))  # warm
    single = []
    for i in range(3):
        t0 = time.perf_counter()
        await complete(backend, _messages(i), sampling=greedy)
        single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    results = await asyncio.gather(*[complete(backend, _messages(i), sampling=greedy) for i in range(CONCURRENT)])
    together = time.perf_counter() - t0
    await backend.aclose()
    return {"single": single, "together": together, "tokens": sum(f.completion_tokens for _, f in results)}


async def _swap_under_load(model_dir: Path, work: Path) -> dict:
    from serving.base import SamplingParams
    from serving.local import LocalBackend
    from serving.router import Router
    from tests.helpers.tiny_model import build_tiny_adapter

    paths = [str(build_tiny_adapter(model_dir, work / f"adapter-{k}", r=8, seed=k, scale=0.02)) for k in (1, 2)]
    backend = LocalBackend(model_dir, max_batch_size=CONCURRENT, batch_wait_ms=5)
    router = Router(backend, unload_grace_s=30, smoke_max_tokens=2)
    await router.swap("coach", "coach-v1", paths[0])
    sampling = SamplingParams(temperature=0.0, max_tokens=12)

    async def load_for(seconds: float | None, swaps: int) -> tuple[list[float], int, int]:
        latencies, failed, stop = [], 0, asyncio.Event()

        async def user(u: int):
            nonlocal failed
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    await router.complete("coach", _messages(u), sampling=sampling)
                    latencies.append(time.perf_counter() - t0)
                except Exception:  # noqa: BLE001
                    failed += 1

        users = [asyncio.create_task(user(u)) for u in range(4)]
        if swaps:
            version = int(router.route("coach").split("-v")[1])
            for _ in range(swaps):
                version += 1
                await router.swap("coach", f"coach-v{version}", paths[version % 2])
                await asyncio.sleep(0.05)
        else:
            await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*users)
        return latencies, failed, swaps

    calm, calm_failed, _ = await load_for(8.0, 0)
    busy, busy_failed, _ = await load_for(None, SWAPS)
    await router.drain()
    await backend.aclose()

    def p99(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]

    return {"calm_p99": p99(calm), "busy_p99": p99(busy), "failed": busy_failed + calm_failed,
            "requests": len(calm) + len(busy) + busy_failed + calm_failed}


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        label, model_dir = _model_dir(work)
        plain_total, plain_tokens, plain_each = _plain_generate(model_dir, [_messages(i) for i in range(CONCURRENT)])
        ours = asyncio.run(_backend_runs(model_dir))
        swap = asyncio.run(_swap_under_load(model_dir, work))
    plain_tps = plain_tokens / plain_total
    ours_tps = ours["tokens"] / ours["together"]
    rows = [
        {"name": f"local backend, {CONCURRENT} concurrent requests vs one after another with plain generate "
                 f"({label}, {NEW_TOKENS} new tokens)", "figure": ours_tps, "baseline": plain_tps, "unit": "tok/s",
         "goal": "ratio >= 2"},
        {"name": f"local backend, one request's latency vs plain generate ({label})",
         "figure": statistics.median(ours["single"]), "baseline": statistics.median(plain_each[:3]), "unit": "s",
         "goal": "ratio <= 1.1"},
        {"name": f"local backend, p99 latency during {SWAPS} hot swaps vs without ({label}, 4 users)",
         "figure": swap["busy_p99"], "baseline": swap["calm_p99"], "unit": "s", "goal": "ratio <= 1.5"},
        {"name": f"local backend, requests failed during {SWAPS} hot swaps (of {swap['requests']})",
         "figure": swap["failed"], "baseline": swap["requests"], "unit": "requests", "goal": "0 failed",
         "met": swap["failed"] == 0},
    ]
    for row in rows:
        row["ratio"] = row["figure"] / row["baseline"] if row["baseline"] else None
        if "met" not in row:
            bound = float(row["goal"].split()[-1])
            row["met"] = row["ratio"] >= bound if ">=" in row["goal"] else row["ratio"] <= bound
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'benchmark':90} {'figure':>10} {'baseline':>10} {'ratio':>7}  goal          met")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        print(f"{r['name'][:90]:90} {r['figure']:>10.3f} {r['baseline']:>10.3f} {ratio:>7}  {r['goal']:13} "
              f"{'yes' if r['met'] else 'NO'}")


if __name__ == "__main__":
    print_table(run())
