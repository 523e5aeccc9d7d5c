"""LocalBackend with the tiny model: batching with per-row adapters, streaming, cancellation, hot swaps, memory."""

from __future__ import annotations

import asyncio
import gc
import threading

import psutil
import pytest

from loopbot.serving.base import Finished, SamplingParams, TextChunk, complete
from loopbot.serving.errors import BackendUnavailable, BadRequest, ModelNotFound, Overloaded
from loopbot.serving.local import LocalBackend
from loopbot.serving.router import Router

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


def ask(i: int) -> list[dict]:
    return [{"role": "system", "content": "You are a marathon coach."},
            {"role": "user", "content": f"How should I pace run number {i}?"}]


@pytest.fixture
async def backend(tiny_model_dir, tiny_adapters):
    b = LocalBackend(tiny_model_dir, max_batch_size=8, batch_wait_ms=20)
    await b.load_adapter("a", str(tiny_adapters["a"]))
    await b.load_adapter("b", str(tiny_adapters["b"]))
    yield b
    await b.aclose()


def peft_greedy(model_dir, adapter_path, messages, max_new_tokens) -> str:
    """The reference: plain transformers (+ peft) generate, one request at a time."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter_path:
        model = PeftModel.from_pretrained(model, adapter_path).eval()
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)


async def test_concurrent_requests_with_different_adapters_match_one_at_a_time_runs(backend, tiny_model_dir,
                                                                                    tiny_adapters):
    plan = [None, "a", "b", "a", None, "b", "b", "a"]
    one_by_one = [await complete(backend, ask(i), adapter=n, sampling=GREEDY) for i, n in enumerate(plan)]
    batches_before = backend.batches_run
    together = await asyncio.gather(*[complete(backend, ask(i), adapter=n, sampling=GREEDY)
                                      for i, n in enumerate(plan)])
    assert backend.batches_run - batches_before <= 2  # really decoded together
    assert [t for t, _ in together] == [t for t, _ in one_by_one]
    assert [f.served_model for _, f in together] == [n or backend.model_name for n in plan]
    assert len({t for t, _ in one_by_one[:3]}) == 3  # base, a and b answer differently
    for i in (0, 1, 2):  # and each matches plain generate with that adapter
        path = tiny_adapters[plan[i]] if plan[i] else None
        assert one_by_one[i][0] == peft_greedy(tiny_model_dir, path, ask(i), GREEDY.max_tokens)


async def test_requests_joining_a_running_batch_match_one_at_a_time_runs(backend):
    """Continuous batching: late requests (other adapters, other prompt lengths) join the running batch."""
    long = SamplingParams(temperature=0.0, max_tokens=40)
    plan = [None, "a", "b", "a", "b", None]
    prompts = [[{"role": "user", "content": "pace " * (1 + 7 * i) + f"run {i}?"}] for i in range(len(plan))]
    alone = [await complete(backend, prompts[i], adapter=n, sampling=long) for i, n in enumerate(plan)]

    async def late(i: int, name):
        await asyncio.sleep(0.02 * i)
        return await complete(backend, prompts[i], adapter=name, sampling=long)

    batches_before = backend.batches_run
    joined = await asyncio.gather(*[late(i, n) for i, n in enumerate(plan)])
    assert backend.batches_run - batches_before < len(plan)  # some requests joined a batch already running
    assert [t for t, _ in joined] == [t for t, _ in alone]
    assert [f.completion_tokens for _, f in joined] == [f.completion_tokens for _, f in alone]


async def test_a_batch_that_never_empties_does_not_carry_its_whole_history(backend):
    """Steady traffic keeps one batch running for ever; each step would add a cache column for every row (and
    left-pad each joining row to it) unless columns no row attends to are dropped."""
    steps = SamplingParams(temperature=0.0, max_tokens=16)
    expected = [await complete(backend, ask(i), sampling=steps) for i in range(3)]

    async def user(u: int) -> list[tuple]:
        out = []
        for i in range(6):  # one after another: the other users' rows keep the batch running meanwhile
            await asyncio.sleep(0.01 * u)
            out.append(await complete(backend, ask(i % 3), sampling=steps))
        return out

    backend.widest_batch = 0
    batches_before = backend.batches_run
    results = await asyncio.gather(*(user(u) for u in range(3)))
    assert backend.batches_run - batches_before < 6  # the batch kept running while requests came and went
    assert all(r == expected[i % 3] for per_user in results for i, r in enumerate(per_user))
    prompt_tokens = max(f.prompt_tokens for _, f in expected)
    # one request's own columns (prompt + 16) plus a little skew between rows, not 18 requests' worth of steps
    assert backend.widest_batch <= prompt_tokens + 16 + 24


async def test_streams_token_by_token_and_reports_usage(backend):
    items = [i async for i in backend.stream(ask(1), adapter="a", sampling=SamplingParams(temperature=0,
                                                                                         max_tokens=10))]
    chunks = [i for i in items if isinstance(i, TextChunk)]
    finished = items[-1]
    assert isinstance(finished, Finished) and len(chunks) >= 3
    assert finished.finish_reason == "length" and finished.completion_tokens == 10 and finished.prompt_tokens > 10
    assert sum(isinstance(i, Finished) for i in items) == 1


async def test_seeded_sampling_is_reproducible(backend):
    s = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=12, seed=42)
    first = await complete(backend, ask(2), adapter="b", sampling=s)
    again = await complete(backend, ask(2), adapter="b", sampling=s)
    other = [await complete(backend, ask(2), adapter="b", sampling=SamplingParams(temperature=0.9, max_tokens=12,
                                                                                  seed=seed)) for seed in (1, 2, 3)]
    assert first == again
    assert any(o[0] != first[0] for o in other)


async def test_cancelling_one_request_stops_it_and_leaves_the_others_intact(backend):
    long = SamplingParams(temperature=0, max_tokens=60)
    expected, _ = await complete(backend, ask(3), adapter="a", sampling=long)
    doomed = backend.stream(ask(4), adapter="b", sampling=long)
    survivor = asyncio.create_task(complete(backend, ask(3), adapter="a", sampling=long))
    await anext(doomed)
    await doomed.aclose()
    text, finished = await survivor
    assert text == expected and finished.completion_tokens == 60


async def test_bad_requests_get_clear_errors(backend, tiny_adapters, tmp_path):
    base_reply, _ = await complete(backend, ask(0), sampling=GREEDY)
    a_reply, _ = await complete(backend, ask(0), adapter="a", sampling=GREEDY)
    with pytest.raises(ModelNotFound, match="'nope' is not loaded"):
        await complete(backend, ask(0), adapter="nope")
    with pytest.raises(BadRequest, match="message 0"):
        await complete(backend, [{"role": "robot", "content": "x"}])
    with pytest.raises(BadRequest, match="at most"):
        await complete(backend, [{"role": "user", "content": "pace tempo " * 2000}])
    with pytest.raises(ModelNotFound, match=r"adapter_config\.json"):
        await backend.load_adapter("c", str(tmp_path))
    with pytest.raises(BadRequest, match="already loaded"):
        await backend.load_adapter("a", str(tiny_adapters["b"]))
    await backend.load_adapter("a", str(tiny_adapters["a"]))  # the same name and path again: a no-op
    # still serving after every error, the same replies: the refused load left adapter "a" as it was
    assert (await complete(backend, ask(0), sampling=GREEDY))[0] == base_reply
    assert (await complete(backend, ask(0), adapter="a", sampling=GREEDY))[0] == a_reply != base_reply
    broken = LocalBackend(tmp_path / "no-model")
    with pytest.raises(BackendUnavailable, match="could not load the model"):
        await complete(broken, ask(0))
    await broken.aclose()


async def test_a_swap_under_load_drops_and_mixes_nothing(tiny_model_dir, tiny_adapters):
    backend = LocalBackend(tiny_model_dir, max_batch_size=8, batch_wait_ms=2)
    paths = {"a": str(tiny_adapters["a"]), "b": str(tiny_adapters["b"])}
    expected = {}
    for key, path in paths.items():
        await backend.load_adapter(f"ref-{key}", path)
        expected[path] = (await complete(backend, ask(0), adapter=f"ref-{key}", sampling=GREEDY))[0]
        await backend.unload_adapter(f"ref-{key}")
    assert expected[paths["a"]] != expected[paths["b"]]
    router = Router(backend, unload_grace_s=30)
    versions = {f"coach-v{v}": paths["a" if v % 2 else "b"] for v in range(1, 8)}
    await router.swap("coach", "coach-v1", versions["coach-v1"])
    results, stop = [], asyncio.Event()

    async def user():
        while not stop.is_set():
            results.append(await router.complete("coach", ask(0), sampling=GREEDY))

    users = [asyncio.create_task(user()) for _ in range(6)]
    try:
        for v in range(2, 8):
            await asyncio.sleep(0.05)
            await router.swap("coach", f"coach-v{v}", versions[f"coach-v{v}"])
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*users)  # any failed request raises here
    await router.drain()
    served = {f.served_model for _, f in results}
    assert len(served) >= 3, served
    for text, finished in results:  # every reply is exactly what its version produces alone
        assert text == expected[versions[finished.served_model]], finished.served_model
    assert [a.name for a in await backend.list_adapters()] == ["coach-v7"]
    await backend.aclose()


async def test_memory_stays_bounded_over_100_adapter_loads_and_unloads(backend, tiny_adapters):
    proc = psutil.Process()
    params = sum(p.numel() for p in backend.model.parameters())

    async def cycle(i: int):
        await backend.load_adapter(f"coach-v{i}", str(tiny_adapters["a" if i % 2 else "b"]))
        await complete(backend, ask(i), adapter=f"coach-v{i}", sampling=SamplingParams(temperature=0, max_tokens=2))
        await backend.unload_adapter(f"coach-v{i}")

    for i in range(10):
        await cycle(i)
    gc.collect()
    rss_after_10 = proc.memory_info().rss
    for i in range(10, 100):
        await cycle(i)
    gc.collect()
    growth_mb = (proc.memory_info().rss - rss_after_10) / 2**20
    assert sum(p.numel() for p in backend.model.parameters()) == params
    assert sorted(a.name for a in await backend.list_adapters()) == ["a", "b"]
    assert growth_mb < 40, f"RSS grew {growth_mb:.0f} MB over 90 load/unload cycles"


async def test_a_full_queue_answers_overloaded_and_queued_requests_still_finish(tiny_model_dir):
    gate = threading.Event()

    def slow_model_path():  # the worker is busy (here: still loading the model) while requests pile up
        gate.wait(30)
        return tiny_model_dir

    backend = LocalBackend(slow_model_path, model_name="tiny", max_queue=2)
    waiting = [asyncio.create_task(complete(backend, ask(i), sampling=GREEDY)) for i in range(2)]
    await asyncio.sleep(0.2)
    with pytest.raises(Overloaded, match="already waiting"):
        await complete(backend, ask(3), sampling=GREEDY)
    gate.set()
    done = await asyncio.gather(*waiting)
    assert all(f.served_model == "tiny" for _, f in done)
    # the queued users get whole replies, the same as when nobody is waiting
    assert [text for text, _ in done] == [(await complete(backend, ask(i), sampling=GREEDY))[0] for i in range(2)]
    await backend.aclose()
