"""LoRA training with trl (SFT, DPO, KTO and their chains), run in the trainer's own process.

`train_adapter(job)` does the work inside the worker process (`python -m loopbot.trainer.train_worker --job FILE`);
`trainer.launch` starts that process and turns its outcome into a new versioned adapter directory.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loopbot.base.errors import UsageError
from loopbot.trainer.importers.common import read_jsonl

log = logging.getLogger(__name__)

METHOD_STAGES = {"sft": ["sft"], "sft+dpo": ["sft", "dpo"], "sft+kto": ["sft", "kto"], "dpo": ["dpo"], "kto": ["kto"]}
STAGE_FILES = {"sft": "sft.jsonl", "dpo": "dpo.jsonl", "kto": "kto.jsonl"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class TrainJob:
    """Everything the worker needs, as plain JSON (the worker never reads config.toml or the database)."""

    persona: str
    base_model: str
    dataset_dir: str
    out_dir: str
    method: str
    trainer: dict  # Settings.trainer.model_dump()
    start_adapter: str | None = None
    result_file: str = ""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class StageResult:
    stage: str
    rows: int
    steps: int = 0
    train_loss: float | None = None
    seconds: float = 0.0
    skipped: str | None = None
    learning_rate: float | None = None
    losses: list[float] = field(default_factory=list)


def dataset_rows(path: Path) -> list[dict]:
    """The rows of one file of a dataset build; none when the build has no such file."""
    return [row for _, row in read_jsonl(path)] if path.is_file() else []


def sft_as_prompt_completion(rows: list[dict]) -> list[dict]:
    """{"messages": [..., reply]} -> {"prompt": [...], "completion": [reply]}: the loss covers the reply only, with
    any chat template (SmolLM2's has no {% generation %} markers, so `assistant_only_loss` would mask everything)."""
    out = []
    for row in rows:
        messages = row["messages"]
        if messages and messages[-1]["role"] == "assistant" and len(messages) > 1:
            out.append({"prompt": messages[:-1], "completion": [messages[-1]]})
    return out


def stages_for(method: str) -> list[str]:
    if method not in METHOD_STAGES:
        raise UsageError(f"trainer.method = {method!r}: expected one of {', '.join(METHOD_STAGES)}")
    return METHOD_STAGES[method]


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def stage_learning_rate(stage_cfg: dict, trainer_cfg: dict, continuing_live: bool) -> float:
    """The stage's learning rate, scaled by `trainer.continue_lr_factor` when training further from a live adapter."""
    factor = trainer_cfg["continue_lr_factor"] if continuing_live else 1.0
    return stage_cfg["learning_rate"] * factor


def _common_args(stage_cfg: dict, trainer_cfg: dict, out: Path, device: str, *, continuing_live: bool) -> dict:
    on_cuda = device.startswith("cuda")
    return dict(
        output_dir=str(out), learning_rate=stage_learning_rate(stage_cfg, trainer_cfg, continuing_live),
        num_train_epochs=stage_cfg["epochs"],
        max_steps=stage_cfg["max_steps"], per_device_train_batch_size=stage_cfg["batch_size"],
        gradient_accumulation_steps=stage_cfg["gradient_accumulation_steps"],
        lr_scheduler_type=stage_cfg["lr_scheduler"], seed=trainer_cfg["seed"], max_length=trainer_cfg["max_length"],
        use_cpu=not on_cuda, bf16=uses_bf16(trainer_cfg, device), gradient_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=1, dataset_num_proc=None,
    )


def uses_bf16(trainer_cfg: dict, device: str) -> bool:
    """bf16 mixed precision: on a CUDA GPU that has it; on a CPU only with `trainer.cpu_bf16` and a CPU whose
    oneDNN kernels have it (AVX512-BF16 or AMX). The weights stay float32 either way (autocast)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    if not trainer_cfg.get("cpu_bf16"):
        return False
    try:  # torch's own check (used by its CPU autocast tests); absent on some builds: then float32
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def capped_steps(stage_cfg: dict, rows: int, batch_size: int) -> int:
    """A preference stage's steps: `max_steps`, bounded by `max_epochs` passes over the rows when set, so a small
    dataset is not trained for many epochs (30 steps on 21 rows is ~6 epochs: it over-fits)."""
    max_steps, max_epochs = stage_cfg["max_steps"], stage_cfg.get("max_epochs")
    if max_steps <= 0 or not max_epochs:
        return max_steps
    per_step = batch_size * stage_cfg["gradient_accumulation_steps"]
    return max(1, min(max_steps, math.ceil(max_epochs * rows / per_step)))


def _reference(stage_cfg: dict, rows: int, steps: int, batch_size: int) -> dict:
    """trl's reference options: the reference log-probabilities once up front (the reference never changes), when
    training reads every row at least once; else per step, for the rows read only. Scoring all of them first cost
    more than the training it saved: 298 KTO rows took ~7.5 min to score for 30 steps that read 120 of them."""
    reads = steps * batch_size * stage_cfg["gradient_accumulation_steps"] if steps > 0 else rows
    return {"precompute_ref_log_probs": stage_cfg["precompute_ref_log_probs"] and reads >= rows}


def dpo_losses(stage_cfg: dict) -> dict:
    """trl's loss options: plain DPO, or DPO plus an SFT term on the chosen replies (`sft_weight` > 0)."""
    weight = stage_cfg["sft_weight"]
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, weight]} if weight > 0 else {}


def _lora_config(lora: dict):
    from peft import LoraConfig

    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM", bias="none")


def _load_model(base_model: str, adapter: str | None, device: str):
    """The base model, with `adapter` attached as the trainable "default" adapter when given."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    if adapter is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter, is_trainable=True)


def _run_stage(stage: str, rows: list[dict], job: TrainJob, start: str | None, out: Path, tokenizer,
               device: str) -> StageResult:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    t0 = time.monotonic()  # trl scores the reference while the trainer is built: part of the stage's time
    cfg = job.trainer
    stage_cfg = cfg[stage]
    args = _common_args(stage_cfg, cfg, out / f"_{stage}", device, continuing_live=job.start_adapter is not None)
    model = _load_model(job.base_model, start, device)
    peft_config = None if start else _lora_config(cfg["lora"])
    data = Dataset.from_list(rows)
    if stage == "sft":
        data = Dataset.from_list(sft_as_prompt_completion(rows))
        trainer = SFTTrainer(model=model, args=SFTConfig(**args, completion_only_loss=True), train_dataset=data,
                             processing_class=tokenizer, peft_config=peft_config)
    elif stage == "dpo":
        args["max_steps"] = capped_steps(stage_cfg, len(rows), args["per_device_train_batch_size"])
        reference = _reference(stage_cfg, len(rows), args["max_steps"], args["per_device_train_batch_size"])
        config = DPOConfig(**args, beta=stage_cfg["beta"], **reference, **dpo_losses(stage_cfg))
        trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=data, processing_class=tokenizer,
                             peft_config=peft_config)
    else:
        liked = sum(1 for r in rows if r["label"])
        disliked = len(rows) - liked
        weights = {}
        if liked and disliked:  # trl's advice for unbalanced votes: keep desirable:undesirable weight ~ 1:1
            weights = {"desirable_weight": 1.0, "undesirable_weight": round(liked / disliked, 4)} \
                if disliked > liked else {"desirable_weight": round(disliked / liked, 4), "undesirable_weight": 1.0}
        args["per_device_train_batch_size"] = max(2, args["per_device_train_batch_size"])
        args["max_steps"] = capped_steps(stage_cfg, len(rows), args["per_device_train_batch_size"])
        reference = _reference(stage_cfg, len(rows), args["max_steps"], args["per_device_train_batch_size"])
        config = KTOConfig(**args, beta=stage_cfg["beta"], **weights, **reference)
        trainer = KTOTrainer(model=model, ref_model=None, args=config, train_dataset=data, processing_class=tokenizer,
                             peft_config=peft_config)
    output = trainer.train()
    losses = [round(float(e["loss"]), 5) for e in trainer.state.log_history if "loss" in e]
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(out), selected_adapters=["default"])
    trainer.accelerator.wait_for_everyone()
    shutil.rmtree(out / f"_{stage}", ignore_errors=True)
    return StageResult(stage=stage, rows=len(rows), steps=output.global_step, train_loss=round(output.training_loss, 5),
                       seconds=round(time.monotonic() - t0, 2), learning_rate=args["learning_rate"], losses=losses)


def train_adapter(job: TrainJob) -> list[StageResult]:
    """Run the method's stages in order; each stage starts from the previous stage's adapter (or the start one)."""
    import torch
    from transformers import AutoTokenizer, set_seed

    set_seed(job.trainer["seed"])
    device = pick_device(job.trainer["device"])
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(job.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = job.start_adapter
    results: list[StageResult] = []
    for stage in stages_for(job.method):
        rows = dataset_rows(Path(job.dataset_dir) / STAGE_FILES[stage])
        minimum = 2 if stage == "kto" else 1
        if len(rows) < minimum:
            results.append(StageResult(stage=stage, rows=len(rows),
                                       skipped=f"{len(rows)} rows in {STAGE_FILES[stage]}"))
            log.warning("stage %s skipped: %s", stage, results[-1].skipped)
            continue
        stage_out = out / f"_after_{stage}"
        log.info("stage %s: %d rows, starting from %s", stage, len(rows), start or "a fresh LoRA")
        results.append(_run_stage(stage, rows, job, start, stage_out, tokenizer, device))
        log.info("stage %s done: %s", stage, results[-1])
        start = str(stage_out)
    if not any(r.skipped is None for r in results):
        raise RuntimeError("no training stage had data: " + "; ".join(f"{r.stage}: {r.skipped}" for r in results))
    for name in ADAPTER_FILES:
        shutil.copyfile(Path(start) / name, out / name)
    for r in results:
        if r.skipped is None:
            shutil.rmtree(out / f"_after_{r.stage}", ignore_errors=True)
    (out / "training.json").write_text(json.dumps({"method": job.method, "start_adapter": job.start_adapter,
                                                   "stages": [asdict(r) for r in results]}, indent=2))
    return results
