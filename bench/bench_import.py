"""Peak memory of a WhatsApp import vs the export's size (issue 17: at most 5x; reading the file whole took 27x).

    python bench/bench_import.py [--mb 50]

The export is generated (two people, ~70 bytes a message) and imported in a fresh process, so the peak resident
memory it adds (VmHWM - VmRSS before the import) is the import's own. `run(mb=None)` reads
LOOPBOT_BENCH_IMPORT_MB (default 50). Reports; never asserts."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(mb: float) -> dict:
    from testkit.whatsapp_export import PROBE, write_export  # after the sys.path line above, like the other benches

    with tempfile.TemporaryDirectory() as tmp:
        chat = Path(tmp) / "chat.txt"
        messages = write_export(chat, mb)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE, str(chat)], capture_output=True, text=True, cwd=ROOT,
                             check=True)
        probe = json.loads(out.stdout)
        return {"size": chat.stat().st_size, "messages": messages, "peak": probe["growth_kb"] * 1024,
                "kept": probe["kept"], "seconds": time.perf_counter() - started}


def run(mb: float | None = None) -> dict:
    mb = mb or float(os.environ.get("LOOPBOT_BENCH_IMPORT_MB", "50"))
    m = measure(mb)
    return {"name": f"WhatsApp import of {m['size'] / 1e6:.0f} MB ({m['messages']} messages, {m['seconds']:.0f} s): "
                    "peak memory added vs file size",
            "figure": m["peak"], "baseline": m["size"], "unit": "bytes", "goal": "ratio <= 5"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50)
    m = measure(parser.parse_args().mb)
    print(f"{m['size'] / 1e6:.1f} MB, {m['messages']} messages -> {m['kept']} examples in {m['seconds']:.1f} s; "
          f"peak memory added {m['peak'] / 1e6:.0f} MB = {m['peak'] / m['size']:.2f}x the file size")
