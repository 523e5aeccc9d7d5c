"""`loopbot train --persona NAME`: one training cycle now (build datasets, train, evaluate, gate, promote)."""

from __future__ import annotations

import asyncio
import sys

import typer

from loopbot.base.errors import LoopbotError, UsageError
from loopbot.commands.context import app_from, settings_from
from loopbot.trainer import jobs
from loopbot.trainer.pipeline import run_cycle
from loopbot.trainer.train import METHOD_STAGES


def train(ctx: typer.Context,
          persona: str = typer.Option(..., "--persona", "-p", help="the persona to train"),
          method: str | None = typer.Option(None, "--method", help="sft | sft+dpo | sft+kto | dpo | kto "
                                                                   "(default: trainer.method)"),
          force: bool = typer.Option(False, "--force", help="train even with fewer than trainer.min_new_votes "
                                                            "new votes (e.g. on imported examples only)"),
          promote: bool = typer.Option(True, "--promote/--no-promote", help="promote the candidate if it passes "
                                                                            "the gate"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="do not show the trainer's output"),
          enqueue: bool = typer.Option(False, "--enqueue", help="put the cycle on the training queue for a "
                                                                "`loopbot worker` and print the job id (PostgreSQL)")
          ) -> None:
    """Run one training cycle; the trainer runs in its own process and logs under <data_dir>/logs/train/."""
    if method is not None and method not in METHOD_STAGES:
        raise UsageError(f"--method {method!r}: expected one of {', '.join(METHOD_STAGES)}")
    if enqueue:
        _enqueue(settings_from(ctx), persona, force=force, method=method, promote=promote)
        return
    loopbot = app_from(ctx)
    loopbot.settings.persona(persona)
    result = asyncio.run(run_cycle(loopbot, persona, trigger="manual", force=force, promote=promote, method=method,
                                   echo=not quiet and sys.stderr.isatty()))
    if result is None:
        raise LoopbotError(f"a training cycle of {persona} is already running (one per persona at a time)")
    version = f" v{result.version}" if result.version else ""
    typer.echo(f"training run {result.run_id} of {persona}: {result.status}{version}")
    if result.reason:
        typer.echo(f"  {result.reason}")
    if result.report:
        typer.echo(f"  report: {result.report} (+ .png)")
    if result.status == "failed":
        raise typer.Exit(1)


def _enqueue(settings, persona: str, *, force: bool, method: str | None, promote: bool) -> None:
    settings.persona(persona)
    if not promote:
        raise UsageError("--enqueue runs the cycle like the schedule does: --no-promote is not supported with it")
    if not jobs.queue_enabled(settings):
        raise UsageError("--enqueue needs the training queue: trainer.queue is off or storage.url is SQLite "
                         "(without --enqueue the cycle runs here)")
    job_id = jobs.enqueue_cycle(settings, persona, trigger="manual", force=force, method=method)
    typer.echo(f"queued training job {job_id} for {persona} (`loopbot jobs list`; a `loopbot worker` runs it)")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
