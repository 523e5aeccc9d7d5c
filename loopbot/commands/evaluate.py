"""`loopbot eval --persona NAME --candidate vN`: evaluate a version against the live one and apply the gate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from loopbot.base.errors import UsageError
from loopbot.commands.context import app_from
from loopbot.storage import crud
from loopbot.trainer.dataset_stats import last_build
from loopbot.trainer.pipeline import evaluate_and_gate


def parse_version(text: str, persona: str) -> int:
    """'7', 'v7' or 'coach-v7' -> 7."""
    raw = text.strip()
    for prefix in (f"{persona}-v", "v"):
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
            break
    if not raw.isdigit():
        raise UsageError(f"{text!r} is not a version (expected vN, N or {persona}-vN)")
    return int(raw)


def dataset_for(loopbot, persona: str, manifest: dict) -> Path:
    """The build the candidate was trained on, else the persona's newest build."""
    build_id = (manifest or {}).get("build_id")
    if build_id and (loopbot.settings.datasets_dir / persona / build_id).is_dir():
        return loopbot.settings.datasets_dir / persona / build_id
    last = last_build(loopbot.engine, persona)
    if last and Path(last["path"]).is_dir():
        return Path(last["path"])
    raise UsageError(f"no dataset build of {persona} to evaluate on: run `loopbot dataset build --persona {persona}` "
                     f"or pass --dataset DIR")


def evaluate(ctx: typer.Context,
             persona: str = typer.Option(..., "--persona", "-p", help="the persona"),
             candidate: str = typer.Option(..., "--candidate", "-c", help="the version to evaluate: vN"),
             dataset: Path | None = typer.Option(None, "--dataset", help="a dataset build directory (default: the "
                                                                         "one the candidate was trained on)")) -> None:
    """Perplexity, preference accuracy, judge win rate and degeneracy vs the live version; the gate's verdict."""
    loopbot = app_from(ctx)
    loopbot.settings.persona(persona)
    version = parse_version(candidate, persona)
    row = crud.get_adapter(loopbot.engine, persona=persona, version=version)
    if row is None:
        raise UsageError(f"{persona} has no version {version}")
    if not row.path:
        raise UsageError(f"{row.name} is a hosted model ({row.remote_model_id}): it has no local weights to evaluate")
    data = dataset or dataset_for(loopbot, persona, row.dataset_manifest)
    report, path, gate = asyncio.run(evaluate_and_gate(loopbot, persona, version, data))
    typer.echo(f"{row.name} vs {report['live'] or 'the base model'} on {data.name} "
               f"({report['heldout']['sft']} liked replies, {report['heldout']['dpo']} pairs, "
               f"{report['prompts']} prompts):")
    for label in ("candidate", "live", "base"):
        v = report["variants"][label]
        deg = v.get("degeneracy") or {}
        extra = (f", {deg['words_per_reply']:.1f} words/reply, {deg['cutoff_rate']:.0%} cut off"
                 if deg else "")
        typer.echo(f"  {label:9} perplexity {v['perplexity']}, preference accuracy {v['preference_accuracy']}{extra}")
    if report.get("judge"):
        typer.echo(f"  judge win rate: {report['judge'].get('win_rate')}")
    typer.echo(f"gate: {'PASSED' if gate.passed else 'REJECTED'} - {gate.summary()}")
    typer.echo(f"report: {path} (+ .png)")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
