"""`loopbot demo`: simulated users vote, nightly cycles train, and the live 👍 rate is measured after each one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from loopbot.base.errors import UsageError
from loopbot.commands.context import settings_from
from loopbot.demo.population import load_preference
from loopbot.demo.progress import DemoProgress
from loopbot.demo.runner import DemoOptions, run_demo


def demo(ctx: typer.Context,
         quick: bool = typer.Option(False, "--quick", help="a tiny model built on the spot: the whole loop in "
                                                           "about two minutes, for CI and a first look"),
         cycles: int = typer.Option(2, "--cycles", help="training cycles to run"),
         users: str | None = typer.Option(None, "--users", help="the simulated users' taste: module:function "
                                                                   "taking (question, reply) and returning True "
                                                                   "when they like the reply "
                                                                   "[default: loopbot.demo.population:"
                                                                   "speaks_to_runner]"),
         data_dir: Path | None = typer.Option(None, "--data-dir", help="where to keep the database, adapters "
                                                                          "and report [default: a fresh "
                                                                          "temporary directory]"),
         seed: int = typer.Option(0, "--seed", help="seed for the questions, users and sampling"),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="also show the parts' log lines")) -> None:
    """Show the loop improving a bot, offline: SQLite, the local backend, SmolLM2 from its PyPI wheel."""
    if cycles < 1:
        raise UsageError(f"--cycles {cycles}: run at least one cycle")
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        raise UsageError(f"--data-dir {data_dir}: not empty (the demo needs a fresh directory; "
                         "leave the option out for a temporary one)")
    load_preference(users)  # a bad --users fails here, before any model is loaded
    settings = settings_from(ctx)
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    ui = DemoProgress()
    try:
        result = asyncio.run(run_demo(settings, DemoOptions(quick=quick, cycles=cycles, users=users,
                                                            data_dir=data_dir, seed=seed), ui))
    finally:
        ui.close()
    v = result.verdict
    met = v.improved and v.no_worse_promotion and v.within_band
    typer.echo(f"\nreport: {result.report}\nplot:   {result.plot}\n"
               f"the bar: {'MET' if met else 'NOT met'} ({result.seconds / 60:.1f} min)")


def register(app: typer.Typer) -> None:
    app.command()(demo)
