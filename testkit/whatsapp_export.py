"""A generated WhatsApp export and the probe that imports it in a fresh process and reports its peak memory: shared by
tests/trainer/test_importers_whatsapp_memory.py and bench/bench_import.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

WORDS = ["run", "easy", "today", "and", "keep", "it", "slow,", "the", "long", "run", "is", "on", "sunday;", "did",
         "you", "eat?", "ok", "¿vamos", "mañana", "al", "parque?", "sí,", "a", "las", "siete", "🏃", "great", "pace",
         "see", "you", "later"]


def write_export(path: Path, megabytes: float) -> int:
    """A two-person Android export of about `megabytes` MB (Ana and Bo take turns, some multi-line messages,
    media, a pause now and then). Returns the number of messages written."""
    at, n, size, limit = datetime(2023, 1, 1, 8, 0), 0, 0, int(megabytes * 1_000_000)
    with path.open("w", encoding="utf-8") as f:
        while size < limit:
            who = "Ana" if (n // 2) % 2 else "Bo"
            words = " ".join(WORDS[(n * 7 + k) % len(WORDS)] for k in range(3 + n % 9))
            text = "<Media omitted>" if n % 97 == 0 else (f"{words}\n{words[::-1]}" if n % 13 == 0 else words)
            line = f"{at:%d/%m/%y}, {at:%H:%M} - {who}: {text}\n"
            f.write(line)
            size += len(line.encode())
            at += timedelta(minutes=1 if n % 50 else 180)
            n += 1
    return n


# Run as `python -c PROBE EXPORT`: imports the export and prints the peak resident memory the import added (kB).
PROBE = """
import json, sys
def kb(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
from loopbot.trainer.importers.whatsapp import import_whatsapp
before = kb("VmRSS")
report, examples = import_whatsapp(sys.argv[1], persona="clone", author="Ana")
print(json.dumps({"growth_kb": kb("VmHWM") - before, "read": report.read, "kept": report.kept}))
"""
