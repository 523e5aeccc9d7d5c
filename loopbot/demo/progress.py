"""Progress bars for the demo (rich): one bar per phase and an overall bar that says how long is left.

The overall bar counts estimated seconds (budgeted from the field notes' measured speeds), so its time-left
column corrects itself as the real speed shows. Without a terminal (a log file) each phase prints one line instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

# SmolLM2 on 2 idle cores, <=128 tokens, 48 users at once (AMD EPYC): 100 held-out replies in 71-107 s; a round of
# 120 questions (retries and arena picks included) in 159-315 s
SECONDS_PER_REPLY = {"quick": 0.15, "full": 1.0}


class DemoProgress:
    def __init__(self, enabled: bool = True, console=None):
        self.enabled = enabled
        self.console = console
        self.progress = None
        self.overall = None
        self.estimates: dict[str, float] = {}
        self.started = time.monotonic()
        self.done_s = 0.0
        self.total_s = 0.0
        self.timed = [0.0, 0.0]  # (estimated, actual) seconds of the phases that generate or train
        if enabled:
            from rich.console import Console

            self.console = console or Console()
            self.live = self.console.is_terminal
            if not self.live:
                self.console.width = 160  # a log file: whole lines, not wrapped at 80

    def plan(self, plan, cycles: int, *, quick: bool) -> None:
        """Budget every phase from the plan; start the overall bar."""
        spr = SECONDS_PER_REPLY["quick" if quick else "full"]
        self.estimates = {
            "model": 15.0 if quick else 30.0,
            "seed": 2.0,
            "measure": plan.measure_questions * spr,
            "traffic": plan.traffic_questions * 1.8 * spr,
            # measured on 2 idle cores, batch 4, replies <= 128 tokens, reference precomputed: DPO 10.9-12.3 s/step on
            # AMD EPYC (8.3-10.1 on Intel Xeon); a whole cycle 272-468 s, so build + evaluation + gate ~50-240 s
            "cycle": 25.0 if quick else plan.dpo_steps * 12.0 + 180.0,
        }
        e = self.estimates
        self.total_s = e["model"] + e["seed"] + (cycles + 1) * e["measure"] + cycles * (e["traffic"] + e["cycle"])
        if not self.enabled:
            return
        self.say(f"budget: about {self.total_s / 60:.0f} min ({cycles} cycles)")
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"),
                                     TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()
            self.overall = self.progress.add_task("demo (estimated seconds)", total=round(self.total_s))

    def _left(self) -> str:
        """The remaining estimate, scaled by how fast the model phases really ran so far."""
        estimated, actual = self.timed
        ratio = actual / estimated if estimated else 1.0
        return f"about {max(0.0, self.total_s - self.done_s) * ratio / 60:.1f} min left"

    @contextlib.contextmanager
    def phase(self, kind: str, description: str, total: int | None = None) -> Iterator:
        """A phase of the demo; yields tick() to call once per unit of `total`."""
        estimate = self.estimates.get(kind, 0.0)
        per_tick = estimate / total if total else 0.0
        task = None
        if self.progress is not None:
            task = self.progress.add_task(description, total=total)
        elif self.enabled:
            self.say(f"{description} ...")
        advanced = 0.0

        def tick() -> None:
            nonlocal advanced
            if task is not None:
                self.progress.advance(task)
                self.progress.advance(self.overall, per_tick)
            advanced += per_tick

        t0 = time.monotonic()
        try:
            yield tick
        finally:
            rest = max(0.0, estimate - advanced)
            self.done_s += estimate
            if kind in ("measure", "traffic", "cycle"):
                self.timed[0] += estimate
                self.timed[1] += time.monotonic() - t0
            if task is not None:
                self.progress.update(task, completed=total or 1, total=total or 1)
                self.progress.advance(self.overall, rest)
                self.progress.remove_task(task)
            elif self.enabled:
                self.say(f"  done in {time.monotonic() - t0:.0f} s ({self._left()})")

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        self.console.print(text, markup=False, highlight=False)
        if not self.live:
            sys.stdout.flush()

    def warn(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[bold yellow]warning:[/] {text}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
