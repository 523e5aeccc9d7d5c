"""A large WhatsApp export is read as a stream: the import's peak memory stays a small multiple of the file size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testkit.whatsapp_export import PROBE, write_export

ROOT = Path(__file__).resolve().parents[2]


def test_a_large_export_is_imported_with_peak_memory_under_five_times_its_size(tmp_path):
    chat = tmp_path / "big_chat.txt"
    messages = write_export(chat, 8)
    out = subprocess.run([sys.executable, "-c", PROBE, str(chat)], capture_output=True, text=True, cwd=ROOT,
                         check=True, timeout=300)
    probe = json.loads(out.stdout)
    assert probe["read"] == messages and probe["kept"] > 1000
    ratio = probe["growth_kb"] * 1024 / chat.stat().st_size
    assert ratio <= 5, f"peak memory grew by {ratio:.1f}x the file size"
