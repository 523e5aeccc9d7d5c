"""A training cycle end to end on the tiny model: feedback in the database -> a served, better adapter."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from loopbot.storage import crud
from loopbot.trainer.pipeline import choose_method, cycle_running, run_cycle
from tests.trainer.conftest import loopbot_on
from tests.trainer.synthetic import seed_feedback


def _lora_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.slow
async def test_sft_dpo_cycle_then_kto_cycle_train_new_versions_that_serve(loopbot, tiny_model_dir):
    seed_feedback(loopbot.engine, conversations=40)
    first = await run_cycle(loopbot, "coach", trigger="manual")
    assert first.status == "promoted", first.reason
    v1 = crud.active_adapter(loopbot.engine, persona="coach")
    assert (v1.version, v1.name, v1.status) == (1, "coach-v1", "active")
    assert Path(v1.path) == loopbot.settings.adapters_dir / "coach" / "v1"
    lora_b = [t for k, t in _lora_tensors(Path(v1.path)).items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b), "training left LoRA B at its zero initialisation"
    run = crud.get_training_run(loopbot.engine, run_id=first.run_id)
    assert run.status == "promoted" and run.candidate_version == 1
    assert [s["step"] for s in run.steps] == ["build", "train", "train", "evaluate", "gate", "promote"]
    assert [s["stage"] for s in run.steps[2]["stages"]] == ["sft", "dpo"]
    cfg = loopbot.settings.trainer
    assert [s["learning_rate"] for s in run.steps[2]["stages"]] == [cfg.sft.learning_rate, cfg.dpo.learning_rate]
    assert run.dataset_sizes["feedback_id_max"] and run.dataset_sizes["dpo"] >= 4
    report = json.loads(first.report.read_text())
    cand, base = report["variants"]["candidate"], report["variants"]["live"]
    assert cand["preference_accuracy"] > base["preference_accuracy"]
    assert first.report.with_suffix(".png").stat().st_size > 1000

    seed_feedback(loopbot.engine, conversations=20, seed=1)
    second = await run_cycle(loopbot, "coach", method="kto")
    assert second.status in ("promoted", "rejected"), second.reason
    v2 = crud.get_adapter(loopbot.engine, persona="coach", version=2)
    assert v2.parent_version == 1 and v2.metrics["training"]["stages"][0]["stage"] == "kto"
    # it continued coach-v1 on the votes since coach-v1's own build, not on those coach-v1 already learnt
    build = crud.get_training_run(loopbot.engine, run_id=second.run_id).steps[0]
    assert build["since"]["build_id"] == v1.dataset_manifest["build_id"]
    votes_now, votes_v1 = (c["kto"] + c["heldout_kto"] for c in (build["counts"], run.steps[0]["counts"]))
    assert 0 < votes_now < votes_v1
    # ... at a smaller learning rate: coach-v1 is already trained
    [kto] = crud.get_training_run(loopbot.engine, run_id=second.run_id).steps[2]["stages"]
    assert kto["learning_rate"] == pytest.approx(cfg.kto.learning_rate * cfg.continue_lr_factor)
    assert cfg.continue_lr_factor < 1
    t1, t2 = _lora_tensors(Path(v1.path)), _lora_tensors(Path(v2.path))
    assert t1.keys() == t2.keys() and any((t1[k] - t2[k]).abs().sum() > 0 for k in t1)

    from loopbot.serving.base import SamplingParams, complete
    from loopbot.serving.local import LocalBackend

    backend = LocalBackend(tiny_model_dir, device="cpu")
    try:
        await backend.load_adapter(v2.name, v2.path)
        text, finished = await complete(backend, [{"role": "user", "content": "How far should I run?"}],
                                        adapter=v2.name, sampling=SamplingParams(temperature=0, max_tokens=8))
        assert finished.completion_tokens > 0 and text
    finally:
        await backend.aclose()


@pytest.mark.slow
async def test_killed_training_leaves_a_failed_run_and_nothing_servable(loopbot):
    loopbot.settings.trainer.sft.max_steps = 100_000  # long enough to be killed mid-training
    seed_feedback(loopbot.engine, conversations=30)
    pids: list[int] = []
    task = asyncio.create_task(run_cycle(loopbot, "coach", on_spawn=pids.append))
    logs = loopbot.settings.data_dir / "logs" / "train"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if logs.is_dir() and any("stage sft:" in p.read_text(errors="replace") for p in logs.iterdir()):
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("training never started")
    await asyncio.sleep(1.0)
    os.kill(pids[0], signal.SIGKILL)
    result = await asyncio.wait_for(task, 60)
    assert result.status == "failed" and "killed by signal 9" in result.reason
    run = crud.get_training_run(loopbot.engine, run_id=result.run_id)
    assert run.status == "failed" and "killed" in run.error
    assert crud.list_adapters(loopbot.engine, persona="coach") == []
    assert crud.active_adapter(loopbot.engine, persona="coach") is None
    assert list((loopbot.settings.adapters_dir / "coach").iterdir()) == []  # no vN/, no partial directory
    assert not cycle_running(loopbot.engine, "coach")


async def test_a_cycle_with_too_few_new_votes_is_skipped_with_the_reason(loopbot):
    seed_feedback(loopbot.engine, conversations=3)  # 6 votes < min_new_votes = 10
    result = await run_cycle(loopbot, "coach", trigger="cron")
    assert result.status == "skipped" and result.reason.startswith("6 new feedback events (6 votes, ")
    run = crud.get_training_run(loopbot.engine, run_id=result.run_id)
    assert run.status == "skipped" and run.trigger == "cron" and "min_new_votes" in run.error
    assert crud.list_adapters(loopbot.engine, persona="coach") == []


async def test_a_second_cycle_waits_its_turn_while_the_lock_is_held(loopbot):
    assert crud.acquire_run_lock(loopbot.engine, persona="coach", holder="another process")
    assert cycle_running(loopbot.engine, "coach")
    assert await run_cycle(loopbot, "coach", force=True) is None
    assert crud.list_training_runs(loopbot.engine, persona="coach") == []


@pytest.mark.slow
@pytest.mark.postgres
async def test_two_loopbots_on_one_postgres_run_one_cycle_not_two(postgres_url, train_settings):
    from tests.helpers.databases import truncate_all

    a, b = loopbot_on(postgres_url, train_settings), loopbot_on(postgres_url, train_settings)
    truncate_all(a.engine)
    try:
        a.settings.trainer.method = "sft"
        seed_feedback(a.engine, conversations=30)
        results = await asyncio.gather(run_cycle(a, "coach", trigger="cron"), run_cycle(b, "coach", trigger="cron"))
        assert sum(r is None for r in results) == 1
        ran = next(r for r in results if r is not None)
        assert ran.status in ("promoted", "rejected"), ran.reason
        late = await run_cycle(b, "coach", trigger="cron")  # the other scheduler's turn comes after: no new data
        assert late.status == "skipped"
        runs = crud.list_training_runs(a.engine, persona="coach")
        assert sorted(r.status for r in runs) == sorted([ran.status, "skipped"])
        assert len(crud.list_adapters(a.engine, persona="coach")) == 1
    finally:
        a.engine.dispose()
        b.engine.dispose()


@pytest.mark.parametrize("configured, counts, expected", [
    ("sft+dpo", {"sft": 10, "dpo": 20, "kto": 30}, "sft+dpo"),
    ("sft+dpo", {"sft": 10, "dpo": 2, "kto": 30}, "sft+kto"),
    ("dpo", {"sft": 0, "dpo": 1, "kto": 1}, None),
    ("sft+dpo", {"sft": 0, "dpo": 9, "kto": 0}, "dpo"),
    ("kto", {"sft": 5, "dpo": 0, "kto": 0}, None),
    ("sft", {"sft": 0, "dpo": 9, "kto": 9}, None),
])
def test_the_method_follows_the_data(configured, counts, expected):
    method, why = choose_method(configured, counts, min_pairs=8)
    assert method == expected, why
    if expected is None:
        assert why.startswith("nothing to train on")


@pytest.mark.parametrize("counts, expected", [
    ({"sft": 10, "dpo": 10, "kto": 267}, "sft+kto"),  # a realistic cycle: a few pairs among many unpaired rows
    ({"sft": 10, "dpo": 35, "kto": 110}, "sft+dpo"),  # every reply voted: the pairs are most of what there is
    ({"sft": 10, "dpo": 20, "kto": 100}, "sft+kto"),  # exactly the ratio
])
def test_dpo_gives_way_to_kto_when_unpaired_rows_far_outnumber_the_pairs(counts, expected):
    method, why = choose_method("sft+dpo", counts, min_pairs=8, kto_over_pairs=5)
    assert method == expected, why
    if expected == "sft+kto":
        assert why == f"sft+kto instead of sft+dpo ({counts['kto']} KTO rows >= trainer.kto_over_pairs = 5 x " \
                      f"{counts['dpo']} preference pairs)"
    assert choose_method("sft+dpo", counts, min_pairs=8, kto_over_pairs=0)[0] == "sft+dpo"  # switched off


async def test_an_admin_request_answers_at_once_and_runs_in_the_background(loopbot):
    from loopbot.trainer.pipeline import pending_cycle, request_cycle

    assert "started in the background" in request_cycle(loopbot, "coach")
    assert request_cycle(loopbot, "coach") == "a training cycle of coach is already running"
    result = await asyncio.wait_for(pending_cycle("coach"), 60)
    assert result.status == "skipped" and result.reason.startswith("nothing to train on")


@pytest.fixture
def stubbed(engine, train_settings, monkeypatch):
    """A Loopbot on the engine fixture's database whose training writes an adapter row (and files) at once and
    whose evaluation returns a verdict set by the test: what is left is the cycle's bookkeeping."""
    from loopbot.trainer import pipeline
    from loopbot.trainer.gate import Check, GateResult
    from loopbot.trainer.launch import TrainedVersion

    bot = loopbot_on(engine.url.render_as_string(hide_password=False), train_settings)
    bot.__dict__["engine"] = engine
    verdict = {"passed": True, "files": True}

    async def train(engine, settings, persona, *, run_id, dataset_manifest, heartbeat, **_):
        version = crud.next_adapter_version(engine, persona=persona)
        path = settings.adapters_dir / persona / f"v{version}"
        if verdict["files"]:
            path.mkdir(parents=True)
            (path / "adapter_config.json").write_text("{}")
        crud.create_adapter(engine, persona=persona, version=version, base_model="tiny", path=str(path),
                            training_run_id=run_id, dataset_manifest=dataset_manifest)
        heartbeat()
        return TrainedVersion(version, path, [{"stage": "sft", "rows": 1}], path / "train.log")

    async def evaluate(loopbot, persona, version, dataset_dir):
        gate = GateResult(verdict["passed"], [Check("perplexity", verdict["passed"], "held-out perplexity")])
        report = {"variants": {"candidate": {"perplexity": 9.0}}, "seconds": 1.0, "gate": gate.as_dict()}
        return report, Path(dataset_dir) / "report.json", gate

    monkeypatch.setattr(pipeline, "train_new_version", train)
    monkeypatch.setattr(pipeline, "_evaluate", evaluate)
    seed_feedback(engine, conversations=8)
    return bot, verdict


async def test_a_cycle_that_passes_the_gate_records_its_promotion_with_the_activation(stubbed):
    bot, _ = stubbed
    result = await run_cycle(bot, "coach", force=True, method="sft")
    assert result.status == "promoted", result.reason
    run = crud.get_training_run(bot.engine, run_id=result.run_id)
    assert run.status == "promoted" and [s["step"] for s in run.steps][-3:] == ["evaluate", "gate", "promote"]
    live = crud.active_adapter(bot.engine, persona="coach")
    assert live.version == result.version == run.candidate_version and live.metrics["gate"]["passed"]


async def test_a_rejected_version_and_its_run_end_together(stubbed):
    bot, verdict = stubbed
    verdict["passed"] = False
    result = await run_cycle(bot, "coach", force=True, method="sft")
    assert result.status == "rejected" and "perplexity" in result.reason
    run = crud.get_training_run(bot.engine, run_id=result.run_id)
    assert run.status == "rejected" and [s["step"] for s in run.steps][-2:] == ["evaluate", "gate"]
    rejected = crud.get_adapter(bot.engine, persona="coach", version=result.version)
    assert rejected.status == "failed" and rejected.status_reason.startswith("rejected by the gate: perplexity")
    assert crud.active_adapter(bot.engine, persona="coach") is None


async def test_a_promotion_that_fails_fails_the_version_and_the_run(stubbed):
    bot, verdict = stubbed
    verdict["files"] = False  # the trainer wrote no adapter files: nothing to serve
    result = await run_cycle(bot, "coach", force=True, method="sft")
    assert result.status == "failed" and "no adapter files" in result.reason
    run = crud.get_training_run(bot.engine, run_id=result.run_id)
    assert run.status == "failed" and run.steps[-1]["step"] == "cycle" and "no adapter files" in run.error
    [version] = crud.list_adapters(bot.engine, persona="coach")
    assert version.status == "failed" and version.status_reason.startswith("passed the gate, but promotion failed")
    assert crud.active_adapter(bot.engine, persona="coach") is None
    assert not cycle_running(bot.engine, "coach")
