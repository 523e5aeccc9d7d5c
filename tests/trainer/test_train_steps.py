"""The trainer's stages: the dataset rows they read, and max_epochs bounding the steps on a small dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopbot.trainer.train import (
    TrainJob,
    capped_steps,
    dataset_rows,
    dpo_losses,
    stage_learning_rate,
    train_adapter,
)


def _stage(**kw):
    return {"max_steps": 30, "max_epochs": None, "gradient_accumulation_steps": 1, **kw}


def test_the_trainer_reads_the_rows_a_build_wrote_and_none_for_a_missing_file(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "one\u2028two"}, {"role": "assistant", "content": "ok"}]},
            {"messages": [{"role": "user", "content": "again"}, {"role": "assistant", "content": "sure"}]}]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert dataset_rows(tmp_path / "sft.jsonl") == rows
    assert dataset_rows(tmp_path / "kto.jsonl") == []


def test_max_epochs_bounds_max_steps_and_none_leaves_it_alone():
    assert capped_steps(_stage(), rows=21, batch_size=4) == 30  # unset: max_steps alone, as before
    assert capped_steps(_stage(max_epochs=2.0), rows=21, batch_size=4) == 11  # ceil(2 * 21 / 4)
    assert capped_steps(_stage(max_epochs=2.0), rows=200, batch_size=4) == 30  # a big dataset: max_steps
    assert capped_steps(_stage(max_epochs=2.0, max_steps=-1), rows=21, batch_size=4) == -1  # epochs decide


def test_continuing_a_live_adapter_scales_the_learning_rate():
    stage, trainer = {"learning_rate": 2e-4}, {"continue_lr_factor": 0.5}
    assert stage_learning_rate(stage, trainer, continuing_live=False) == 2e-4  # a fresh LoRA: the stage's rate
    assert stage_learning_rate(stage, trainer, continuing_live=True) == 1e-4


def test_sft_weight_adds_an_sft_term_on_the_chosen_replies():
    assert dpo_losses({"sft_weight": 0.0}) == {}  # plain DPO: trl's default loss
    assert dpo_losses({"sft_weight": 1.0}) == {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]}


def test_a_kto_stage_on_few_rows_stops_after_max_epochs(train_settings, tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}],
             "completion": [{"role": "assistant", "content": f"answer {i}"}], "label": i % 2 == 0} for i in range(6)]
    (data / "kto.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    trainer = train_settings.trainer.model_copy(deep=True)
    trainer.kto.max_steps, trainer.kto.max_epochs, trainer.kto.batch_size = 20, 2.0, 2
    job = TrainJob(persona="coach", base_model=train_settings.models["smollm2"].path, dataset_dir=str(data),
                   out_dir=str(tmp_path / "out"), method="kto", trainer=trainer.model_dump(mode="json"))
    [stage] = train_adapter(job)
    assert stage.steps == 6  # 2 epochs of 6 rows in batches of 2, not 20 steps


def _dpo_job(settings, tmp_path, name: str, *, start: str | None, steps: int, precompute: bool) -> TrainJob:
    data = tmp_path / "ds"
    if not data.exists():
        data.mkdir()
        rows = [{"prompt": [{"role": "user", "content": f"How far should I run in week {i}?"}],
                 "chosen": [{"role": "assistant", "content": f"You can run {i + 5} km easy."}],
                 "rejected": [{"role": "assistant", "content": "Running is a sport. Running is a sport."}]}
                for i in range(8)]
        (data / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    trainer = settings.trainer.model_copy(deep=True)
    trainer.dpo.max_steps, trainer.dpo.max_epochs, trainer.dpo.learning_rate = steps, None, 5e-3
    trainer.dpo.precompute_ref_log_probs = precompute
    return TrainJob(persona="coach", base_model=settings.models["smollm2"].path, dataset_dir=str(data),
                    out_dir=str(tmp_path / name), method="dpo", trainer=trainer.model_dump(mode="json"),
                    start_adapter=start)


@pytest.mark.slow
@pytest.mark.parametrize("precompute", [True, False])
def test_continuing_an_adapter_uses_it_as_the_reference_at_a_smaller_rate(train_settings, tmp_path, precompute):
    first = _dpo_job(train_settings, tmp_path, "v1", start=None, steps=4, precompute=precompute)
    [fresh] = train_adapter(first)
    assert fresh.learning_rate == 5e-3 and fresh.losses[-1] < 0.6  # v1 moved away from the base model
    [cont] = train_adapter(_dpo_job(train_settings, tmp_path, "v2", start=first.out_dir, steps=2,
                                    precompute=precompute))
    # the policy starts as v1, and so does its reference (precomputed or not): the first DPO loss is ln 2;
    # against the base model as reference it would be v1's own low loss
    assert cont.losses[0] == pytest.approx(0.69315, abs=1e-3)
    assert cont.learning_rate == pytest.approx(5e-3 * train_settings.trainer.continue_lr_factor)


@pytest.mark.parametrize("rows, steps, precomputed", [
    (8, 2, True),     # 2 steps of 4 read every row: scoring them once up front saves a forward pass per step
    (298, 30, False),  # 30 steps of 4 read 120 of 298 rows: scoring all 298 first cost ~7.5 min for nothing
    (8, -1, True),    # epochs, no step limit: every row is read
])
def test_the_reference_is_scored_up_front_only_when_training_reads_every_row(rows, steps, precomputed):
    from loopbot.trainer.train import _reference

    stage = {"precompute_ref_log_probs": True, "gradient_accumulation_steps": 1}
    assert _reference(stage, rows, steps, 4) == {"precompute_ref_log_probs": precomputed}
    assert _reference({**stage, "precompute_ref_log_probs": False}, rows, steps, 4) == \
        {"precompute_ref_log_probs": False}


def test_bf16_on_a_cpu_only_when_asked_for_and_the_cpu_has_it():
    import torch

    from loopbot.trainer.train import _common_args, uses_bf16

    has_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert uses_bf16({"cpu_bf16": False}, "cpu") is False
    assert uses_bf16({"cpu_bf16": True}, "cpu") is has_bf16
    stage = {"learning_rate": 1e-4, "epochs": 1, "max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1,
             "lr_scheduler": "constant"}
    trainer = {"continue_lr_factor": 0.5, "seed": 0, "max_length": 64, "cpu_bf16": True}
    args = _common_args(stage, trainer, Path("/tmp/unused"), "cpu", continuing_live=False)
    assert args["use_cpu"] is True and args["bf16"] is has_bf16


@pytest.mark.slow
def test_a_dpo_stage_with_sft_weight_also_fits_the_chosen_replies(train_settings, tmp_path):
    job = _dpo_job(train_settings, tmp_path, "v1", start=None, steps=1, precompute=True)
    job.trainer["dpo"]["sft_weight"] = 1.0
    [stage] = train_adapter(job)
    # ln 2 from the preference term, plus the chosen replies' negative log-likelihood (the tiny model's is large)
    assert stage.losses[0] > 0.69315 + 1.0
