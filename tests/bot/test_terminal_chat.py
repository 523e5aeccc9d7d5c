"""`loopbot chat`: a scripted session through the real command, the real local backend and the tiny model."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from loopbot.app import Loopbot
from loopbot.storage.db import make_engine, session_scope
from loopbot.storage.models import Feedback, Generation, Message
from loopbot.terminal_chat import run_terminal_chat

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_piped_lines_are_answered_one_each_and_stored(tmp_path, tiny_model_dir):
    env = {**os.environ, "LOOPBOT_DATA_DIR": str(tmp_path / "data"),
           "LOOPBOT_MODELS__SMOLLM2__PATH": str(tiny_model_dir),
           "LOOPBOT_PERSONAS__COACH__SAMPLING__MAX_TOKENS": "6", "LOOPBOT_SERVING__LOCAL__DEVICE": "cpu"}
    done = subprocess.run([sys.executable, "-m", "loopbot.cli", "--config", str(ROOT / "config.toml"), "chat",
                           "--persona", "coach"], input="How do I pace a marathon?\n\n/persona\n", env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) >= 2 and "▶ coach" in done.stdout  # the reply, then the persona list
    engine = make_engine(f"sqlite:///{tmp_path}/data/loopbot.db")
    with session_scope(engine) as s:
        messages = s.execute(select(Message).order_by(Message.id)).scalars().all()
        gens = s.execute(select(Generation)).scalars().all()
    assert (messages[0].role, messages[0].text) == ("user", "How do I pace a marathon?")
    assert len(gens) == 1 and gens[0].status in ("ok", "cut_off") and gens[0].backend == "local"
    reply = messages[1].text.strip()  # the tiny model samples; it may answer nothing but an end token
    assert reply in done.stdout if reply else "(no answer this time" in done.stdout


def test_an_unknown_persona_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "loopbot.cli", "--config", str(ROOT / "config.toml"), "chat",
                           "--persona", "pirate"], input="", capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "LOOPBOT_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "unknown persona 'pirate'" in done.stderr


def test_interactive_rating_keys(settings, tiny_model_dir):
    settings = settings.model_copy(deep=True)
    settings.models["smollm2"].path = str(tiny_model_dir)
    settings.serving.local.device = "cpu"
    settings.personas["coach"].sampling.max_tokens = 4
    settings.feedback.arena_rate = 0.0
    loopbot = Loopbot(settings)
    out = io.StringIO()
    script = io.StringIO("hello coach\n+\n")
    chat = _Interactive(loopbot, script, out)
    chat.run()
    assert "[+] 👍  [-] 👎  [r] 🔄" in out.getvalue() and "(Thanks! 👍 noted.)" in out.getvalue()
    with session_scope(loopbot.engine) as s:
        assert [v.value for v in s.execute(select(Feedback)).scalars()] == [1]


class _Interactive:
    """Drive the interactive mode with a scripted keyboard (input() reads sys.stdin)."""

    def __init__(self, loopbot, stdin, stdout):
        self.loopbot, self.stdin, self.stdout = loopbot, stdin, stdout

    def run(self):
        old = sys.stdin
        sys.stdin = self.stdin
        try:
            run_terminal_chat(self.loopbot, persona="coach", user="me", stdin=self.stdin, stdout=self.stdout,
                              interactive=True)
        finally:
            sys.stdin = old
