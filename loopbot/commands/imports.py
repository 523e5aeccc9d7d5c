"""`loopbot import ...`: seed a persona from WhatsApp exports, jokes, Q&A files or preference files."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from loopbot.commands.context import app_from
from loopbot.trainer.importers import import_sources, run_import

import_app = typer.Typer(no_args_is_help=True, help="seed a persona from WhatsApp exports, jokes, Q&A or "
                                                     "preference files (each file is imported all or nothing)")

PERSONA = typer.Option(..., "--persona", "-p", help="the persona the examples are for")
DRY_RUN = typer.Option(False, "--dry-run", help="read and report, store nothing")
AS_JSON = typer.Option(False, "--json", help="print the report as JSON")
VALIDATION = typer.Option(None, "--validation-fraction", min=0.0, max=0.99,
                          help="share kept apart for validation (default: trainer.dataset.heldout_fraction)")


def _run(ctx: typer.Context, kind: str, path: Path, persona: str, dry_run: bool, as_json: bool,
         validation: float | None, **options) -> None:
    loopbot = app_from(ctx)
    loopbot.settings.persona(persona)
    if validation is not None:
        options["validation_fraction"] = validation
    engine = None if dry_run else loopbot.engine
    report = run_import(engine, loopbot.settings, persona, kind, path, dry_run=dry_run, **options)
    _show(report, as_json, dry_run)


def _show(report, as_json: bool, dry_run: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
        return
    typer.echo(("(dry run) " if dry_run else "") + report.summary())
    for problem in report.problems:
        typer.echo(f"  {problem}")


@import_app.command("whatsapp")
def whatsapp(ctx: typer.Context, path: Path = typer.Argument(..., help="the exported chat (.txt)"),
             author: str = typer.Option(..., "--author", "-a", help="whose messages the persona learns to write"),
             persona: str = PERSONA,
             merge_minutes: float = typer.Option(10, help="join one author's consecutive messages within this gap"),
             gap_minutes: float = typer.Option(60, help="a silence this long starts a new conversation"),
             max_turns: int = typer.Option(12, help="turns per example; longer conversations are cut"),
             separator: str = typer.Option("\n", help="joins the messages merged into one turn"),
             date_order: str = typer.Option("auto", help="auto | dmy | mdy | ymd"),
             validation: float | None = VALIDATION, dry_run: bool = DRY_RUN, as_json: bool = AS_JSON) -> None:
    """Import a WhatsApp chat export: AUTHOR's messages become the assistant's turns."""
    _run(ctx, "whatsapp", path, persona, dry_run, as_json, validation, author=author, merge_minutes=merge_minutes,
         gap_minutes=gap_minutes, max_turns=max_turns, separator=separator, date_order=date_order)


@import_app.command("jokes")
def jokes(ctx: typer.Context, path: Path = typer.Argument(..., help="JSONL {joke, keywords} or .txt (blank-line "
                                                                    "separated)"),
          persona: str = PERSONA,
          language: str | None = typer.Option(None, help="prompt language, es or en (default: the persona's)"),
          validation: float | None = VALIDATION, dry_run: bool = DRY_RUN, as_json: bool = AS_JSON) -> None:
    """Import a jokes corpus as "tell me a joke about KEYWORD" examples."""
    options = {"language": language} if language else {}
    _run(ctx, "jokes", path, persona, dry_run, as_json, validation, **options)


@import_app.command("qa")
def qa(ctx: typer.Context, path: Path = typer.Argument(..., help='JSONL of {"messages": [...]} or '
                                                                 '{"question", "answer"}'),
       persona: str = PERSONA, validation: float | None = VALIDATION, dry_run: bool = DRY_RUN,
       as_json: bool = AS_JSON) -> None:
    """Import question/answer pairs (Mistral fine-tuning format or question/answer)."""
    _run(ctx, "qa", path, persona, dry_run, as_json, validation)


@import_app.command("preferences")
def preferences(ctx: typer.Context, path: Path = typer.Argument(..., help="JSONL of prompt/chosen/rejected and/or "
                                                                          "prompt/completion/label"),
                persona: str = PERSONA, validation: float | None = VALIDATION, dry_run: bool = DRY_RUN,
                as_json: bool = AS_JSON) -> None:
    """Import preference data: DPO pairs and KTO thumbs."""
    _run(ctx, "preferences", path, persona, dry_run, as_json, validation)


@import_app.command("sources")
def sources(ctx: typer.Context, persona: str = PERSONA, dry_run: bool = DRY_RUN, as_json: bool = AS_JSON) -> None:
    """Import every corpus listed in the persona's `sources` in config.toml."""
    loopbot = app_from(ctx)
    engine = None if dry_run else loopbot.engine
    for report in import_sources(engine, loopbot.settings, persona, dry_run=dry_run):
        _show(report, as_json, dry_run)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
