"""Time from "cycle finished" to "both replicas serve the new version", on the loopback cluster of
tests/test_cluster.py (two real vLLM-on-CPU replicas, moto's S3, PostgreSQL, Redis; each role its own process and
directory). The scenario is the test's; this runs it and reads the figures it prints. Baseline: one adapter sync
interval (serving.vllm.sync_interval_s = 1 s there), the least a replica can take to notice a new version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYNC_INTERVAL_S = 1.0  # what tests/test_cluster.py configures
FIGURES = re.compile(r"both replicas hold coach-v1 in ([0-9.]+) s; -> both bot processes route to it in ([0-9.]+) s")


def run() -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_PROXY": "127.0.0.1,localhost"}
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_cluster.py"]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    match = FIGURES.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"the cluster scenario failed (exit {out.returncode}): {out.stdout[-1500:]}")
    replicas, bots = float(match.group(1)), float(match.group(2))
    return [{"name": "cluster: cycle finished -> both vLLM replicas hold the new version (from S3)",
             "figure": replicas, "baseline": SYNC_INTERVAL_S, "unit": "s"},
            {"name": "cluster: cycle finished -> both bot processes route to it",
             "figure": bots, "baseline": SYNC_INTERVAL_S, "unit": "s"}]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['figure']:.1f} {row['unit']} (one sync interval: {row['baseline']:.0f} s)")
