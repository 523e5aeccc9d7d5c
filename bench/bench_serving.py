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
    from testkit.tiny_model import build_tiny_model

    return "tiny random model", build_tiny_model(work / "tiny", hidden=128)


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


class _Plain:
    """Plain transformers generate, one request at a time: the baseline."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def generate(self, messages: list[dict], max_new_tokens: int = NEW_TOKENS) -> int:
        enc = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
        with self.torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        return out.shape[1] - enc["input_ids"].shape[1]


async def _latency_and_throughput(model_dir: Path) -> dict:
    """Both sides warmed up; single-request latencies alternate between them so load on the machine hits both."""
    from loopbot.serving.base import SamplingParams, complete
    from loopbot.serving.local import LocalBackend

    greedy = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS)
    plain = _Plain(model_dir)
    backend = LocalBackend(model_dir, max_batch_size=CONCURRENT, batch_wait_ms=5)
    await backend.ready()
    plain.generate(_messages(0), 4)
    await complete(backend, _messages(0), sampling=SamplingParams(temperature=0, max_tokens=4))
    ours_single, plain_single = [], []
    for i in range(4):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            if side == 0:
                plain.generate(_messages(i))
                plain_single.append(time.perf_counter() - t0)
            else:
                await complete(backend, _messages(i), sampling=greedy)
                ours_single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    plain_tokens = sum(plain.generate(_messages(i)) for i in range(CONCURRENT))
    plain_total = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = await asyncio.gather(*[complete(backend, _messages(i), sampling=greedy) for i in range(CONCURRENT)])
    together = time.perf_counter() - t0
    await backend.aclose()
    return {"ours_single": ours_single, "plain_single": plain_single, "together": together,
            "tokens": sum(f.completion_tokens for _, f in results), "plain_total": plain_total,
            "plain_tokens": plain_tokens}


SAMPLED_USERS = 16
SAMPLED_TOKENS = 64


def _per_row_sort_backend():
    """The local backend as it sampled before serving.sampling: softmax and a full-vocabulary sort per row."""
    from loopbot.serving.local import LocalBackend
    from loopbot.serving.sampling import nucleus_by_sorting

    class PerRowSort(LocalBackend):
        def _choose(self, rows, logits):
            import torch

            out = []
            for i, row in enumerate(rows):
                s = row.req.sampling
                if row.generator is None:
                    out.append(int(logits[i].argmax()))
                    continue
                probs = torch.softmax(logits[i] / s.temperature, dim=-1)
                if s.top_p < 1.0:
                    probs = nucleus_by_sorting(probs, s.top_p)
                out.append(int(torch.multinomial(probs, 1, generator=row.generator)))
            return out

    return PerRowSort


async def _alternating_tok_s(model_dir: Path, variants: dict, requests: int, max_tokens: int) -> dict:
    """Tokens/s of `requests` concurrent sampled replies (the persona's temperature 0.7, top_p 0.9) for each variant
    name -> (backend class, max_batch_size), in turn and then in reverse order, so machine load hits all of them."""
    from loopbot.serving.base import SamplingParams, complete

    sampling = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=max_tokens, seed=1)
    figures: dict = {name: [] for name in variants}
    for order in (list(variants), list(variants)[::-1]):
        for name in order:
            cls, batch = variants[name]
            backend = cls(model_dir, max_batch_size=batch, batch_wait_ms=20)
            await backend.ready()
            await complete(backend, _messages(0), sampling=SamplingParams(temperature=0.7, max_tokens=4))
            t0 = time.perf_counter()
            results = await asyncio.gather(*[complete(backend, _messages(i), sampling=sampling)
                                              for i in range(requests)])
            figures[name].append(sum(f.completion_tokens for _, f in results) / (time.perf_counter() - t0))
            await backend.aclose()
    return {k: statistics.mean(v) for k, v in figures.items()}


async def _sampled_throughput(model_dir: Path) -> dict:
    """The batched nucleus sampler vs the per-row sort, SAMPLED_USERS replies at once."""
    from loopbot.serving.local import LocalBackend

    variants = {"batched": (LocalBackend, SAMPLED_USERS), "per_row": (_per_row_sort_backend(), SAMPLED_USERS)}
    return await _alternating_tok_s(model_dir, variants, SAMPLED_USERS, SAMPLED_TOKENS)


async def _demo_batch_throughput(model_dir: Path, users: int, max_tokens: int) -> dict:
    """`users` replies decoded `users` at once (the demo's plan) vs SAMPLED_USERS at once (its old setting)."""
    from loopbot.serving.local import LocalBackend

    variants = {users: (LocalBackend, users), SAMPLED_USERS: (LocalBackend, SAMPLED_USERS)}
    return await _alternating_tok_s(model_dir, variants, users, max_tokens)


async def _swap_under_load(model_dir: Path, work: Path) -> dict:
    from loopbot.serving.base import SamplingParams
    from loopbot.serving.local import LocalBackend
    from loopbot.serving.router import Router
    from testkit.tiny_model import build_tiny_adapter

    paths = [str(build_tiny_adapter(model_dir, work / f"adapter-{k}", r=8, seed=k, scale=0.02)) for k in (1, 2)]
    backend = LocalBackend(model_dir, max_batch_size=CONCURRENT, batch_wait_ms=5)
    router = Router(backend, unload_grace_s=30, smoke_max_tokens=2)
    await router.swap("coach", "coach-v1", paths[0])
    sampling = SamplingParams(temperature=0.0, max_tokens=12)

    async def phase(swaps: int, min_requests: int = 40) -> tuple[list[float], int]:
        """4 users ask until `min_requests` replies are in (and, if `swaps`, until that many swaps are done)."""
        latencies, failed, stop, enough = [], 0, asyncio.Event(), asyncio.Event()

        async def user(u: int):
            nonlocal failed
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    await router.complete("coach", _messages(u), sampling=sampling)
                    latencies.append(time.perf_counter() - t0)
                except Exception:
                    failed += 1
                if len(latencies) + failed >= min_requests:
                    enough.set()

        users = [asyncio.create_task(user(u)) for u in range(4)]
        version = int(router.route("coach").split("-v")[1])
        for _ in range(swaps):
            await asyncio.sleep(0.25)
            version += 1
            await router.swap("coach", f"coach-v{version}", paths[version % 2])
        await enough.wait()
        stop.set()
        await asyncio.gather(*users)
        return latencies, failed

    calm, busy, calm_failed, busy_failed = [], [], 0, 0
    for _ in range(2):  # alternate, so a change in the machine's load hits both
        lat, failed = await phase(0)
        calm, calm_failed = calm + lat, calm_failed + failed
        lat, failed = await phase(SWAPS // 2)
        busy, busy_failed = busy + lat, busy_failed + failed
    await router.drain()
    await backend.aclose()

    def p99(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]

    return {"calm_p99": p99(calm), "busy_p99": p99(busy), "failed": busy_failed + calm_failed,
            "requests": len(calm) + len(busy) + busy_failed + calm_failed}


def run() -> list[dict]:
    from loopbot.demo.setup import FULL

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        label, model_dir = _model_dir(work)
        ours = asyncio.run(_latency_and_throughput(model_dir))
        swap = asyncio.run(_swap_under_load(model_dir, work))
        sampled = asyncio.run(_sampled_throughput(model_dir))
        demo_batch = asyncio.run(_demo_batch_throughput(model_dir, FULL.users, FULL.max_tokens))
    plain_tps = ours["plain_tokens"] / ours["plain_total"]
    ours_tps = ours["tokens"] / ours["together"]
    rows = [
        {"name": f"local backend, {CONCURRENT} concurrent requests vs one after another with plain generate "
                 f"({label}, {NEW_TOKENS} new tokens)", "figure": ours_tps, "baseline": plain_tps, "unit": "tok/s",
         "goal": "ratio >= 2"},
        {"name": f"local backend, one request's latency vs plain generate ({label})",
         "figure": statistics.median(ours["ours_single"]), "baseline": statistics.median(ours["plain_single"]),
         "unit": "s",
         "goal": "ratio <= 1.1"},
        {"name": f"local backend, {SAMPLED_USERS} concurrent sampled replies: batched nucleus vs per-row sort "
                 f"({label}, {SAMPLED_TOKENS} new tokens)", "figure": sampled["batched"],
         "baseline": sampled["per_row"], "unit": "tok/s", "goal": "ratio >= 1.2"},
        {"name": f"local backend, {FULL.users} sampled replies decoded {FULL.users} at once vs {SAMPLED_USERS} at once "
                 f"(the demo's users; {label}, {FULL.max_tokens} new tokens)", "figure": demo_batch[FULL.users],
         "baseline": demo_batch[SAMPLED_USERS], "unit": "tok/s", "goal": "ratio >= 1.5"},
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
