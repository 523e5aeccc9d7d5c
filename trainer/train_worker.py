"""The training process: `python -m loopbot.trainer.train_worker --job JOB.json` (or under `accelerate launch -m`).

Reads a TrainJob, trains, writes the adapter into the job's out_dir and a result JSON; exit 0 only on success.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

from loopbot.trainer.orphan_guard import exit_with_parent
from loopbot.trainer.train import TrainJob, train_adapter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopbot.trainer.train_worker", description=__doc__)
    parser.add_argument("--job", required=True, type=Path, help="TrainJob JSON written by trainer.launch")
    args = parser.parse_args(argv)
    exit_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    job = TrainJob.load(args.job)
    result_file = Path(job.result_file) if job.result_file else Path(job.out_dir) / "result.json"
    try:
        stages = train_adapter(job)
    except Exception as e:
        traceback.print_exc()
        if _is_main_process():
            result_file.write_text(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    if _is_main_process():
        result_file.write_text(json.dumps({"ok": True, "stages": [asdict(s) for s in stages]}))
    return 0


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
