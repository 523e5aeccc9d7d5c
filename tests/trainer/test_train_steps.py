"""A preference stage's max_epochs bounds its steps: a small dataset is not trained for many epochs."""

from __future__ import annotations

import json

from trainer.train import TrainJob, capped_steps, stage_learning_rate, train_adapter


def _stage(**kw):
    return {"max_steps": 30, "max_epochs": None, "gradient_accumulation_steps": 1, **kw}


def test_max_epochs_bounds_max_steps_and_none_leaves_it_alone():
    assert capped_steps(_stage(), rows=21, batch_size=4) == 30  # unset: max_steps alone, as before
    assert capped_steps(_stage(max_epochs=2.0), rows=21, batch_size=4) == 11  # ceil(2 * 21 / 4)
    assert capped_steps(_stage(max_epochs=2.0), rows=200, batch_size=4) == 30  # a big dataset: max_steps
    assert capped_steps(_stage(max_epochs=2.0, max_steps=-1), rows=21, batch_size=4) == -1  # epochs decide


def test_continuing_a_live_adapter_scales_the_learning_rate():
    stage, trainer = {"learning_rate": 2e-4}, {"continue_lr_factor": 0.5}
    assert stage_learning_rate(stage, trainer, continuing_live=False) == 2e-4  # a fresh LoRA: the stage's rate
    assert stage_learning_rate(stage, trainer, continuing_live=True) == 1e-4


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
