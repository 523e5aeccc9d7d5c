"""A training or reward-model process stops when the process that launched it dies (a `loopbot worker` killed
mid-job): it runs in a session of its own, so nothing else would stop it, and what it wrote would never be used."""

from __future__ import annotations

import os
import threading
import time

PARENT_ENV = "LOOPBOT_PARENT_PID"


def exit_with_parent(poll_s: float = 2.0) -> None:
    """If LOOPBOT_PARENT_PID names a process, exit (code 1) soon after it is gone; a daemon thread watches it."""
    try:
        parent = int(os.environ.get(PARENT_ENV, ""))
    except ValueError:
        return

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                print(f"the launching process {parent} is gone: stopping", flush=True)
                os._exit(1)
            except PermissionError:  # it exists (under another user): keep going
                pass

    threading.Thread(target=watch, name="orphan-guard", daemon=True).start()
