"""`loopbot bench`: run every bench/bench_*.py and print one table (name, figure, baseline, ratio, goal, met)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import typer

from loopbot.base.errors import UsageError


def _find_bench_dir(explicit: Path | None) -> Path:
    candidate = explicit or Path.cwd() / "bench"
    if (candidate / "run_all.py").is_file():
        return candidate.resolve()
    where = explicit or "./bench"
    raise UsageError(f"no benchmarks at {where} (run from a loopbot checkout, or pass --dir PATH/TO/bench)")


def _load_runner(bench_dir: Path):
    spec = importlib.util.spec_from_file_location("loopbot_bench_run_all", bench_dir / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def bench(names: list[str] | None = typer.Argument(None, help="only benchmarks whose file name contains one "
                                                                 "of these words"),
          bench_dir: Path | None = typer.Option(None, "--dir", help="the bench/ folder (default: ./bench)"),
          markdown: Path | None = typer.Option(None, "--markdown", help="also write the table, with date "
                                                                           "and machine, as Markdown to this file"),
          ) -> None:
    """Run every benchmark in bench/ and print one table. Benchmarks report figures; they never fail a build."""
    directory = _find_bench_dir(bench_dir)
    runner = _load_runner(directory)
    files = runner.discover(directory, names or None)
    if not files:
        raise UsageError(f"no bench_*.py in {directory}" + (f" matching {', '.join(names)}" if names else ""))
    rows = runner.run_all(directory, names or None,
                          on_start=lambda name: typer.echo(f"running {name} ...", err=True))
    runner.print_table(rows)
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(runner.markdown(rows), encoding="utf-8")
        typer.echo(f"wrote {markdown}")


def register(app: typer.Typer) -> None:
    app.command()(bench)
