"""A training process whose launcher was killed (a `loopbot worker` SIGKILLed mid-job) stops by itself instead of
training on, unseen, on the GPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

CHILD = "from loopbot.trainer.orphan_guard import exit_with_parent; import time; exit_with_parent(0.1); time.sleep(60)"
PARENT = f"""
import os, subprocess, sys, time
env = {{**os.environ, "LOOPBOT_PARENT_PID": str(os.getpid())}}
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], env=env, start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by init) counts as gone
        return f.read().split(") ", 1)[1][0] != "Z"


def test_a_training_process_exits_soon_after_its_launcher_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)
        assert _alive(child)  # it runs while its launcher does
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the orphaned process kept running"
    finally:
        parent.kill()
