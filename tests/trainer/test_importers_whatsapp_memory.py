"""A large WhatsApp export is read as a stream: the import's peak memory stays a small multiple of the file size."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["run", "easy", "today", "and", "keep", "it", "slow,", "the", "long", "run", "is", "on", "sunday;", "did", "you", "eat?", "ok", "¿vamos", "mañana", "al", "parque?", "sí,", "a", "las", "siete", "🏃", "great", "pace", "see", "you", "later"]


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


PROBE = """
import json, sys
def kb(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
from loopbot.trainer.importers.whatsapp import import_whatsapp
before = kb("VmRSS")
report, examples = import_whatsapp(sys.argv[1], persona="clone", author="Ana")
print(json.dumps({"growth_kb": kb("VmHWM") - before, "read": report.read, "kept": report.kept}))
"""


def test_a_large_export_is_imported_with_peak_memory_under_five_times_its_size(tmp_path):
    chat = tmp_path / "big_chat.txt"
    messages = write_export(chat, 8)
    out = subprocess.run([sys.executable, "-c", PROBE, str(chat)], capture_output=True, text=True, cwd=ROOT,
                         check=True, timeout=300)
    probe = json.loads(out.stdout)
    assert probe["read"] == messages and probe["kept"] > 1000
    ratio = probe["growth_kb"] * 1024 / chat.stat().st_size
    assert ratio <= 5, f"peak memory grew by {ratio:.1f}x the file size"
