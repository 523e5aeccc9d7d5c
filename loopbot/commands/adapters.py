"""`loopbot adapters list | show | promote | rollback | runs`: the registry of trained versions."""

from __future__ import annotations

import asyncio
import json

import typer

from loopbot.base.errors import UsageError
from loopbot.commands.context import app_from
from loopbot.commands.evaluate import parse_version
from loopbot.storage import crud
from loopbot.trainer.registry import adapter_summary
from loopbot.trainer.registry import promote as do_promote
from loopbot.trainer.registry import rollback as do_rollback

adapters_app = typer.Typer(no_args_is_help=True, help="list, show, promote and roll back adapter versions")
PERSONA = typer.Option(..., "--persona", "-p", help="the persona")


@adapters_app.command("list")
def list_(ctx: typer.Context, persona: str | None = typer.Option(None, "--persona", "-p", help="one persona"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version with its status (candidate, active, retired, failed, rolled_back) and parent."""
    loopbot = app_from(ctx)
    if persona:
        loopbot.settings.persona(persona)
    rows = [adapter_summary(r) for r in crud.list_adapters(loopbot.engine, persona=persona)]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no adapter versions yet (`loopbot train --persona NAME` makes one)")
    for r in rows:
        parent = f" from v{r['parent']}" if r["parent"] else ""
        gate = f", gate: {r['gate']}" if r["gate"] else ""
        typer.echo(f"{r['name']:16} {r['status']:11} created {r['created']}{parent}{gate}"
                   + (f"  ({r['reason']})" if r["reason"] else ""))


@adapters_app.command("show")
def show(ctx: typer.Context, version: str = typer.Argument(..., help="vN"), persona: str = PERSONA) -> None:
    """Everything stored about one version: metrics, gate checks, training stages, dataset lineage."""
    loopbot = app_from(ctx)
    loopbot.settings.persona(persona)
    row = crud.get_adapter(loopbot.engine, persona=persona, version=parse_version(version, persona))
    if row is None:
        raise UsageError(f"{persona} has no version {version}")
    typer.echo(json.dumps(row.model_dump(mode="json"), indent=2, ensure_ascii=False))


@adapters_app.command("promote")
def promote(ctx: typer.Context, version: str = typer.Argument(..., help="vN"), persona: str = PERSONA,
            force: bool = typer.Option(False, "--force", help="promote a failed or rolled-back version too"),
            reason: str = typer.Option("manual promotion", "--reason")) -> None:
    """Make VERSION the live one (a running `loopbot run` picks it up at its next check)."""
    loopbot = app_from(ctx)
    loopbot.settings.persona(persona)
    row = asyncio.run(do_promote(loopbot, persona, parse_version(version, persona), reason=reason, force=force))
    typer.echo(f"{row.name} is active")


@adapters_app.command("rollback")
def rollback(ctx: typer.Context, persona: str = PERSONA,
             to: str | None = typer.Option(None, "--to", help="vN or 'base' (default: the version active before)"),
             reason: str = typer.Option("manual rollback", "--reason")) -> None:
    """Put the previous version (or --to vN, or --to base) back live; the current one becomes rolled_back."""
    loopbot = app_from(ctx)
    loopbot.settings.persona(persona)
    to_base = to == "base"
    target = asyncio.run(do_rollback(loopbot, persona, reason=reason, to_base=to_base,
                                     to_version=None if to is None or to_base else parse_version(to, persona)))
    typer.echo(f"{persona} now serves {target.name if target else 'the base model'}")


@adapters_app.command("runs")
def runs(ctx: typer.Context, persona: str | None = typer.Option(None, "--persona", "-p"),
         limit: int = typer.Option(10, "--limit")) -> None:
    """Recent training runs with each step's outcome."""
    loopbot = app_from(ctx)
    for run in crud.list_training_runs(loopbot.engine, persona=persona, limit=limit):
        version = f" v{run.candidate_version}" if run.candidate_version else ""
        typer.echo(f"run {run.id} {run.persona} {run.trigger} {run.started_at:%Y-%m-%d %H:%M} {run.status}{version}"
                   + (f": {run.error}" if run.error else ""))
        for step in run.steps:
            typer.echo(f"    {step['step']}: {step['outcome']}")


def register(app: typer.Typer) -> None:
    app.add_typer(adapters_app, name="adapters")
