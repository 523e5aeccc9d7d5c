"""`loopbot dataset build | stats`: SFT / DPO / KTO datasets from imported examples and consented feedback."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from loopbot.commands.context import app_from
from loopbot.trainer.base_model import base_model_dir
from loopbot.trainer.cleaning import tokenizer_counter
from loopbot.trainer.dataset_stats import dataset_stats
from loopbot.trainer.datasets import build_datasets

dataset_app = typer.Typer(no_args_is_help=True, help="build SFT / DPO / KTO datasets from feedback")


@dataset_app.command("build")
def build(ctx: typer.Context, persona: str = typer.Option(..., "--persona", "-p", help="the persona to build for"),
          out: Path | None = typer.Option(None, "--out", help="write here instead of "
                                                                   "<data_dir>/datasets/<persona>/<build id>/"),
          tokenizer: bool = typer.Option(False, "--tokenizer", help="count tokens with the persona's base model "
                                                                    "tokenizer (default: a fast estimate)"),
          as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON")) -> None:
    """Build the persona's datasets and print where they are and what they hold."""
    loopbot = app_from(ctx)
    settings = loopbot.settings
    settings.persona(persona)
    count, name = (_persona_tokenizer(settings, persona) if tokenizer else (None, None))
    result = build_datasets(loopbot.engine, settings, persona, out, count_tokens=count, tokenizer_name=name)
    if as_json:
        typer.echo(json.dumps(result.manifest, ensure_ascii=False))
        return
    m = result.manifest
    typer.echo(f"built {result.build_id} in {result.out_dir}")
    typer.echo("  " + ", ".join(f"{k} {v}" for k, v in m["counts"].items()))
    bal = m["kto_balance"]
    typer.echo(f"  KTO balance: {bal['desirable']} 👍 / {bal['undesirable']} 👎")
    if m["dropped"]:
        typer.echo("  dropped: " + ", ".join(f"{k} {v}" for k, v in m["dropped"].items()))
    typer.echo(f"  feedback ids {m['feedback_id_range']}, content hash {m['content_hash'][:16]}")


def _persona_tokenizer(settings, persona: str):
    """(token counter, name) from the persona's base model tokenizer (converted on first use if offline:)."""
    model = settings.models[settings.persona(persona).base_model]
    path = model.tokenizer or str(base_model_dir(settings, persona))
    from transformers import AutoTokenizer

    return tokenizer_counter(AutoTokenizer.from_pretrained(path)), path


@dataset_app.command("stats")
def stats(ctx: typer.Context, persona: str | None = typer.Option(None, "--persona", "-p",
                                                                    help="one persona (default: every persona)"),
          as_json: bool = typer.Option(False, "--json", help="print the statistics as JSON")) -> None:
    """Counts per persona and source, 👍 rate over time, and what the next training run would get."""
    loopbot = app_from(ctx)
    names = [persona] if persona else sorted(loopbot.settings.personas)
    for name in names:
        loopbot.settings.persona(name)
        s = dataset_stats(loopbot.engine, name, loopbot.settings)
        if as_json:
            typer.echo(json.dumps(s, ensure_ascii=False, default=str))
            continue
        typer.echo(f"{name}:")
        for source, counts in sorted(s["seed_examples"].items()):
            typer.echo(f"  seed {source}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        v = s["votes"]
        typer.echo(f"  votes: {v['up']} 👍 / {v['down']} 👎 ({v['not_consented']} from users without consent, "
                   f"not used)")
        for week in s["thumbs_up_by_week"][-8:]:
            typer.echo(f"  week of {week['week']}: {week['up']} 👍 / {week['down']} 👎, 👍 rate {week['rate']:.0%}")
        last = s["last_build"]
        typer.echo(f"  last build: {last['build_id'] if last else 'none'}; new votes since: "
                   f"{s['new_votes_since_last_build']}; since the last training run: {s['new_votes_since_last_run']}")
        nxt = s["next_run"]["counts"]
        typer.echo("  next run would get: " + ", ".join(f"{k} {n}" for k, n in nxt.items()))


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
