"""Catch synchronous database calls made on an event loop's thread: while a LoopGuard watches an engine, every
statement run in a thread that has a running asyncio loop is recorded (with where it came from). Tests use it to
prove the chat core keeps its database I/O off the loop (storage/aio.py)."""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class LoopCall:
    """One statement run on the loop's thread, and the innermost loopbot frames that ran it."""

    statement: str
    where: str


class LoopGuard:
    """`with LoopGuard(engine) as guard: ...` then `guard.calls` lists the statements run on a loop's thread."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.calls: list[LoopCall] = []

    def __enter__(self) -> LoopGuard:
        event.listen(self.engine, "before_cursor_execute", self._check)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._check)

    def _check(self, conn, cursor, statement, parameters, context, executemany) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: a worker thread, or synchronous code
        frames = [f for f in traceback.extract_stack() if "/site-packages/" not in f.filename
                  and not f.filename.endswith(("loop_guard.py", "asyncio/events.py"))]
        where = " <- ".join(f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno}" for f in reversed(frames[-4:]))
        self.calls.append(LoopCall(" ".join(statement.split())[:120], where))
