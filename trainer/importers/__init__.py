"""Importers that seed a persona from real corpora. Each returns an ImportReport; storing is one transaction."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from sqlalchemy.engine import Engine

from loopbot.trainer.importers.common import ImportFileError, ImportReport, store_examples
from loopbot.trainer.importers.jokes import import_jokes
from loopbot.trainer.importers.preferences import import_preferences
from loopbot.trainer.importers.qa import import_qa
from loopbot.trainer.importers.whatsapp import import_whatsapp

__all__ = ["KINDS", "ImportFileError", "ImportReport", "import_sources", "read_import", "resolve_source_path",
           "run_import"]

KINDS = ("whatsapp", "jokes", "qa", "preferences")


def run_import(engine: Engine, settings, persona: str, kind: str, path: str | Path, *,
               dry_run: bool = False, **options) -> ImportReport:
    """Read `path` with the `kind` importer and store its examples for `persona` (all or nothing)."""
    report, examples = read_import(settings, persona, kind, path, **options)
    return report if dry_run else store_examples(engine, report, examples)


def read_import(settings, persona: str, kind: str, path: str | Path, **options):
    """Parse a file with the `kind` importer: (report, [(kind, split, data)]) without touching the database."""
    persona_cfg = settings.persona(persona)
    options.setdefault("validation_fraction", settings.trainer.dataset.heldout_fraction)
    if kind == "whatsapp":
        if not options.get("author"):
            raise ImportFileError("a WhatsApp import needs the author to clone (--author NAME)")
        report, examples = import_whatsapp(path, persona=persona, **options)
    elif kind == "jokes":
        options.setdefault("language", persona_cfg.language)
        report, examples = import_jokes(path, persona=persona, **options)
    elif kind == "qa":
        report, examples = import_qa(path, persona=persona, **options)
    elif kind == "preferences":
        report, examples = import_preferences(path, persona=persona, **options)
    else:
        raise ImportFileError(f"unknown importer {kind!r}; expected one of: {', '.join(KINDS)}")
    return report, examples


def resolve_source_path(settings, path: str) -> Path:
    """A configured source path: absolute, or relative to the working directory or the config's directory
    (the parent of a relative data_dir), whichever has it; `examples/NAME` also finds the installed samples."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (Path.cwd(), settings.data_dir.parent):
        if (base / p).is_file():
            return base / p
    if p.parts[:1] == ("examples",) and len(p.parts) == 2:
        packaged = importlib.resources.files("loopbot.examples") / p.name
        if packaged.is_file():
            return Path(str(packaged))
    return p


def import_sources(engine: Engine, settings, persona: str, *, dry_run: bool = False) -> list[ImportReport]:
    """Import every `sources` entry configured for the persona in config.toml."""
    persona_cfg = settings.persona(persona)
    if not persona_cfg.sources:
        raise ImportFileError(f"persona {persona!r} has no sources in the config "
                              f"(add e.g. sources = [{{ kind = \"qa\", path = \"file.jsonl\" }}])")
    parsed = []
    for src in persona_cfg.sources:  # read every file first: one bad file stops the import before anything is stored
        options = {"author": src.author} if src.kind == "whatsapp" else {}
        parsed.append(read_import(settings, persona, src.kind, resolve_source_path(settings, src.path), **options))
    if dry_run:
        return [report for report, _ in parsed]
    return [store_examples(engine, report, examples) for report, examples in parsed]
