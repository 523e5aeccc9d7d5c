"""The reward-model process: `python -m loopbot.trainer.reward_worker --job JOB.json`.

Trains the persona's base model as a one-label sequence classifier with a LoRA and a trained score head (trl 1.16's
`RewardTrainer`, peft `task_type="SEQ_CLS"`, which saves the `score` head with the adapter) on the job's dataset
build, scores the held-out votes with the saved model (as serving will load it) and writes `reward.json`.
Exit 0 only on success; the launcher (`loopbot.trainer.reward`) gates and publishes the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from loopbot.serving.rerank import RewardScorer
from loopbot.trainer.orphan_guard import exit_with_parent
from loopbot.trainer.reward import RewardJob, heldout_votes, ranking_accuracy, training_pairs
from loopbot.trainer.train import pick_device

log = logging.getLogger("loopbot.trainer.reward_worker")


def train_reward(job: RewardJob) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer


    cfg, out = job.reward, Path(job.out_dir)
    set_seed(job.seed)
    device = pick_device(job.device)
    rows, counts = training_pairs(Path(job.dataset_dir), cross_pairs_per_vote=cfg["cross_pairs_per_vote"],
                                  seed=job.seed)
    if not rows:
        raise RuntimeError("no training pairs: no DPO pair and no (liked, disliked) votes in the build")
    tok = AutoTokenizer.from_pretrained(job.base_model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    on_cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(job.base_model, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tok.pad_token_id
    batch = cfg["batch_size"]
    steps = max(1, min(cfg["max_steps"], math.ceil(cfg["max_epochs"] * len(rows) / batch)))
    args = RewardConfig(output_dir=str(out / "_trainer"), learning_rate=cfg["learning_rate"], max_steps=steps,
                        per_device_train_batch_size=batch, lr_scheduler_type="constant", seed=job.seed,
                        max_length=job.max_length, use_cpu=not on_cuda, bf16=dtype == torch.bfloat16,
                        gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1)
    lora = job.lora
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                             target_modules=lora["target_modules"], task_type="SEQ_CLS", bias="none")
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                            peft_config=peft_config)
    log.info("reward model: %d pairs (%s), %d steps", len(rows), counts, steps)
    t0 = time.monotonic()
    result = trainer.train()
    seconds = round(time.monotonic() - t0, 2)
    history = trainer.state.log_history
    losses = [round(float(e["loss"]), 5) for e in history if "loss" in e]
    train_acc = [float(e["accuracy"]) for e in history if "accuracy" in e]
    trainer.model.save_pretrained(str(out))
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    del trainer, model

    votes = heldout_votes(Path(job.dataset_dir))
    scorer = RewardScorer(job.base_model, out, max_length=job.max_length, device=device)
    scores = scorer.score([(p, c) for p, c, _ in votes]) if votes else []
    accuracy, comparisons = ranking_accuracy(scores, [lk for _, _, lk in votes])
    liked = sum(1 for *_, lk in votes if lk)
    return {
        "persona": job.persona,
        "heldout": {"accuracy": accuracy, "comparisons": comparisons, "liked": liked, "disliked": len(votes) - liked,
                    "mean_liked": _mean([s for s, v in zip(scores, votes, strict=True) if v[2]]),
                    "mean_disliked": _mean([s for s, v in zip(scores, votes, strict=True) if not v[2]])},
        "train": {**counts, "rows": len(rows), "steps": result.global_step,
                  "train_loss": round(result.training_loss, 5), "seconds": seconds, "losses": losses,
                  "final_batch_accuracy": train_acc[-1] if train_acc else None,
                  "learning_rate": cfg["learning_rate"]},
    }


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopbot.trainer.reward_worker", description=__doc__)
    parser.add_argument("--job", required=True, type=Path, help="RewardJob JSON written by trainer.reward")
    args = parser.parse_args(argv)
    exit_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    job = RewardJob.load(args.job)
    try:
        info = train_reward(job)
    except Exception:
        traceback.print_exc()
        return 1
    tmp = Path(job.out_dir) / ".reward.json.tmp"
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    os.replace(tmp, Path(job.out_dir) / "reward.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
