"""`loopbot demo`: simulated users vote, nightly cycles train, and the live 👍 rate is measured after each one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from loopbot.base.errors import UsageError
from loopbot.commands.context import settings_from
from loopbot.demo.behaviour import resolve
from loopbot.demo.mixture import load_population
from loopbot.demo.progress import DemoProgress
from loopbot.demo.runner import DemoOptions, run_demo


def demo(ctx: typer.Context,
         quick: bool = typer.Option(False, "--quick", help="a tiny model built on the spot: the whole loop in "
                                                           "about two minutes, for CI and a first look"),
         cycles: int | None = typer.Option(None, "--cycles", help="training cycles to run [default: 3; with "
                                                                   "--quick: 2]"),
         users: str | None = typer.Option(None, "--users", help="the simulated users' tastes: module:function "
                                                                   "taking (question, reply) and returning True "
                                                                   "when they like the reply, or a mixture "
                                                                   "taste:weight,taste:weight (each user draws "
                                                                   "one) [default: loopbot.demo.population:"
                                                                   "speaks_to_runner]"),
         feedback: str = typer.Option("realistic", "--feedback", help="realistic: users vote, retry and follow "
                                                                       "up like people (the options below); "
                                                                       "ideal: a vote on every reply, never wrong, "
                                                                       "🔄 on every disliked one, no follow-ups"),
         vote_share: float | None = typer.Option(None, "--vote-share", help="share of replies a user votes on "
                                                                             "(realistic: 0.2; ideal: 1)"),
         flip_share: float | None = typer.Option(None, "--flip-share", help="share of votes that say the "
                                                                             "opposite (realistic: 0.1; ideal: 0)"),
         retry_share: float | None = typer.Option(None, "--retry-share", help="share of disliked replies a user "
                                                                               "presses 🔄 on (realistic: 0.15; "
                                                                               "ideal: 1)"),
         follow_up_liked: float | None = typer.Option(None, "--follow-up-liked", help="chance of a follow-up "
                                                                                       "question after a liked "
                                                                                       "reply (realistic: 0.5; "
                                                                                       "ideal: 0)"),
         follow_up_disliked: float | None = typer.Option(None, "--follow-up-disliked", help="... after a "
                                                                                             "disliked one "
                                                                                             "(realistic: 0.15; "
                                                                                             "ideal: 0)"),
         data_dir: Path | None = typer.Option(None, "--data-dir", help="where to keep the database, adapters "
                                                                          "and report [default: a fresh "
                                                                          "temporary directory]"),
         seed: int = typer.Option(0, "--seed", help="seed for the questions, users' tastes and choices, and sampling"),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="also show the parts' log lines")) -> None:
    """Show the loop improving a bot, offline: SQLite, the local backend, SmolLM2 from its PyPI wheel."""
    if cycles is None:
        cycles = 2 if quick else 3
    if cycles < 1:
        raise UsageError(f"--cycles {cycles}: run at least one cycle")
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        raise UsageError(f"--data-dir {data_dir}: not empty (the demo needs a fresh directory; "
                         "leave the option out for a temporary one)")
    load_population(users)  # a bad --users fails here, before any model is loaded
    behaviour = resolve(feedback, vote_share=vote_share, flip_share=flip_share, retry_share=retry_share,
                        follow_up_liked=follow_up_liked, follow_up_disliked=follow_up_disliked)
    settings = settings_from(ctx)
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    ui = DemoProgress()
    try:
        result = asyncio.run(run_demo(settings, DemoOptions(quick=quick, cycles=cycles, users=users,
                                                            data_dir=data_dir, seed=seed, feedback=feedback,
                                                            behaviour=behaviour), ui))
    finally:
        ui.close()
    v = result.verdict
    met = v.improved and v.no_worse_promotion and v.within_band
    typer.echo(f"\nreport: {result.report}\nplot:   {result.plot}\n"
               f"the bar: {'MET' if met else 'NOT met'} ({result.seconds / 60:.1f} min)")


def register(app: typer.Typer) -> None:
    app.command()(demo)
