"""loopbot's training stage (trainer.train.train_adapter) on CUDA in bf16, and on the same machine's CPU.

Not part of `loopbot bench` (it needs a CUDA GPU). Run it on the GPU machine from a checkout:

    python bench/gpu/train_stage_cuda.py --job DATA/adapters/coach/v1/job.json --model-config DIR --dataset DIR

--job: any job.json a demo or nightly run wrote beside its adapter (its [trainer] settings are used);
--model-config: a folder with the base model's config.json and tokenizer files: the model is built there with
random weights (same shape and compute as the real one, nothing large to copy); --dataset: a dataset build folder
(dpo.jsonl). It prints one RESULT line per run: steps, seconds of the whole stage (reference scoring and set-up
included) and seconds per step. Measured on an H100 on 2026-11-26: see README, "Deploying".
"""
import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", type=Path, required=True)
    ap.add_argument("--model-config", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/loopbot-gpu-bench"))
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from loopbot.trainer.train import TrainJob, train_adapter

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: this bench measures the training stage on one")
    model_dir = args.work / "model"
    shutil.copytree(args.model_config, model_dir, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(model_dir)
    print("torch", torch.__version__, torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported(), flush=True)
    template = json.loads(args.job.read_text())

    def run(name: str, device: str, steps: int, batch: int) -> None:
        job = copy.deepcopy(template)
        job.update(base_model=str(model_dir), dataset_dir=str(args.dataset), out_dir=str(args.work / name),
                   start_adapter=None, result_file="")
        job["trainer"]["device"] = device
        job["trainer"]["dpo"].update(max_steps=steps, batch_size=batch, max_epochs=None)
        (res,) = train_adapter(TrainJob(**job))
        print(f"RESULT {name}: device={device} batch={batch} steps={res.steps} rows={res.rows} "
              f"stage_s={res.seconds:.1f} s_per_step={res.seconds / max(res.steps, 1):.2f}", flush=True)

    run("cuda-warm-up", "cuda", 2, 4)
    run("cuda-b4", "cuda", 20, 4)
    run("cuda-b16", "cuda", 20, 16)
    run("cpu-b4", "cpu", 5, 4)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
