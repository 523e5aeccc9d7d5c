"""Run every bench/bench_*.py module's `run()` and print ONE table. Benchmarks report; they never assert.

Contract for a bench module: `run()` returns one row or a list of rows, each a dict with
  name      what was measured, e.g. "local serving: batch of 8 vs one at a time"
  figure    the measured number (float)
  baseline  the same thing measured in the same run the simple way (float)
  unit      optional, e.g. "tok/s"
  goal      optional text, e.g. "ratio >= 2" or "ratio <= 1.1" (then `met` is worked out from the ratio)
  met       optional bool, when the goal is not a ratio bound
`ratio` = figure / baseline is computed here. A module that raises gives a row with its error, not a crash.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
_GOAL = re.compile(r"^\s*ratio\s*(>=|<=|>|<)\s*([0-9.]+)\s*$")


@dataclass
class Row:
    module: str
    name: str
    figure: float | None = None
    baseline: float | None = None
    unit: str = ""
    goal: str = ""
    met: bool | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ratio(self) -> float | None:
        if self.figure is None or not self.baseline:
            return None
        return self.figure / self.baseline


def discover(bench_dir: Path = BENCH_DIR, only: list[str] | None = None) -> list[Path]:
    """bench_*.py files, sorted; `only` keeps those whose name contains one of the given words."""
    files = sorted(bench_dir.glob("bench_*.py"))
    if only:
        files = [f for f in files if any(word in f.stem for word in only)]
    return files


def _goal_met(goal: str, ratio: float | None) -> bool | None:
    match = _GOAL.match(goal or "")
    if not match or ratio is None:
        return None
    op, bound = match.group(1), float(match.group(2))
    return {">=": ratio >= bound, "<=": ratio <= bound, ">": ratio > bound, "<": ratio < bound}[op]


def _rows_from(module: str, result, seconds: float) -> list[Row]:
    items = result if isinstance(result, list) else [result]
    rows = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            rows.append(Row(module, module, error=f"run() returned {type(item).__name__}, expected a dict with name"))
            continue
        row = Row(module=module, name=str(item["name"]), unit=str(item.get("unit", "")), goal=str(item.get("goal", "")),
                  seconds=seconds)
        try:
            row.figure = None if item.get("figure") is None else float(item["figure"])
            row.baseline = None if item.get("baseline") is None else float(item["baseline"])
        except (TypeError, ValueError):
            row.error = f"figure/baseline are not numbers: {item.get('figure')!r}, {item.get('baseline')!r}"
        met = item.get("met")
        row.met = bool(met) if met is not None else _goal_met(row.goal, row.ratio)
        rows.append(row)
    return rows


def run_module(path: Path) -> list[Row]:
    """Import one bench file and call its run(); errors become a row."""
    start = time.perf_counter()
    try:
        spec = importlib.util.spec_from_file_location(f"bench_run_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent.parent))  # the checkout: run() imports `testkit`, `bench.*` lazily
        try:
            spec.loader.exec_module(module)
            if not callable(getattr(module, "run", None)):
                return [Row(path.stem, path.stem, error="no run() function")]
            result = module.run()
        finally:
            sys.path.remove(str(path.parent.parent))
    except Exception as e:
        last = traceback.extract_tb(e.__traceback__)[-1]
        return [Row(path.stem, path.stem, error=f"{type(e).__name__}: {e} ({Path(last.filename).name}:{last.lineno})",
                    seconds=time.perf_counter() - start)]
    return _rows_from(path.stem, result, time.perf_counter() - start)


def run_all(bench_dir: Path = BENCH_DIR, only: list[str] | None = None, on_start=None) -> list[Row]:
    rows: list[Row] = []
    for path in discover(bench_dir, only):
        if on_start:
            on_start(path.stem)
        rows.extend(run_module(path))
    return rows


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    text = f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{text} {unit}".strip()


def table_cells(row: Row) -> list[str]:
    """name, figure, baseline, ratio, goal, met: the one table's columns."""
    if row.error:
        return [row.name, f"error: {row.error}", "-", "-", row.goal or "-", "-"]
    met = "-" if row.met is None else ("yes" if row.met else "NO")
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    return [row.name, _fmt(row.figure, row.unit), _fmt(row.baseline, row.unit), ratio, row.goal or "-", met]


HEADERS = ["name", "figure", "baseline", "ratio", "goal", "met"]


def machine() -> str:
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def markdown(rows: list[Row]) -> str:
    """The table as Markdown, headed by the date and machine it came from (for the README)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Measured {stamp} on {machine()}.", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "---|" * len(HEADERS)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row)) + " |")
    return "\n".join(lines) + "\n"


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"loopbot bench: {machine()}")
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*table_cells(row))
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # logs and pipes get whole lines


def main(argv: list[str] | None = None) -> int:
    only = (argv if argv is not None else sys.argv[1:]) or None
    rows = run_all(only=only, on_start=lambda name: print(f"running {name} ...", file=sys.stderr, flush=True))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
