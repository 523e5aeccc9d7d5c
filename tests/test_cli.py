"""The `loopbot` command: help everywhere, init, db upgrade, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def loopbot(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPBOT_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "loopbot.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_help_lists_every_command(tmp_path):
    r = loopbot("--help", cwd=tmp_path)
    assert r.returncode == 0
    for name in ("init", "db", "run", "chat"):
        assert name in r.stdout


def test_init_then_db_upgrade_creates_the_database(tmp_path):
    r = loopbot("init", str(tmp_path / "bot"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bot" / "config.toml").is_file() and (tmp_path / "bot" / "data").is_dir()
    again = loopbot("init", str(tmp_path / "bot"), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    up = loopbot("db", "upgrade", cwd=tmp_path / "bot")
    assert up.returncode == 0, up.stderr
    assert "at revision" in up.stdout and (tmp_path / "bot" / "data" / "loopbot.db").is_file()
    cur = loopbot("db", "current", cwd=tmp_path / "bot")
    assert cur.stdout.strip() and "empty" not in cur.stdout


def test_unknown_command_is_a_usage_error(tmp_path):
    r = loopbot("frobnicate", cwd=tmp_path)
    assert r.returncode == 2 and "No such command" in r.stderr
