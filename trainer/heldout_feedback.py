"""The held-out split's feedback, read in two parts: the votes (KTO rows from votes and both sides of held-out
pairs) and the implicit signals (KTO rows from 🔄, follow-ups and ended conversations), which the gate weighs apart."""

from __future__ import annotations

import json
from pathlib import Path

from loopbot.trainer.datasets import SOURCES_SUFFIX
from loopbot.trainer.implicit_signals import IMPLICIT_SOURCES
from loopbot.trainer.train import dataset_rows

Labelled = tuple[list[dict], list[dict], bool]  # (prompt, completion, liked)


def heldout_sources(dataset_dir: Path, kind: str, rows: int) -> list[str] | None:
    """The source of each held-out row of `kind` (the build's `heldout_<kind>.jsonl.sources`), or None when the
    build has no such file or it does not match the rows (a build from before the file existed)."""
    path = Path(dataset_dir) / f"heldout_{kind}{SOURCES_SUFFIX}"
    if not path.is_file():
        return None
    sources = path.read_text(encoding="utf-8").splitlines()
    return sources if len(sources) == rows else None


def heldout_kto_sources(dataset_dir: Path, rows: int) -> list[str]:
    """Each held-out KTO row's source; a build without a matching sources file held no implicit rows there."""
    return heldout_sources(dataset_dir, "kto", rows) or ["feedback"] * rows


def _distinct(rows: list[Labelled]) -> list[Labelled]:
    seen, out = set(), []
    for prompt, completion, liked in rows:
        key = json.dumps([prompt, completion, liked], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((prompt, completion, liked))
    return out


def split_heldout_kto(kto: list[dict], sources: list[str]) -> tuple[list[dict], list[dict]]:
    """(rows from votes, rows from implicit signals) of the held-out KTO rows, by their sources."""
    votes = [r for r, s in zip(kto, sources, strict=True) if s not in IMPLICIT_SOURCES]
    signals = [r for r, s in zip(kto, sources, strict=True) if s in IMPLICIT_SOURCES]
    return votes, signals


def labelled_feedback(kto: list[dict], dpo: list[dict], sources: list[str]) -> tuple[list[Labelled], list[Labelled]]:
    """(votes, signals) of held-out rows already read: every distinct voted reply (vote KTO rows and both sides of
    the pairs), and every distinct reply an implicit signal labelled, as (prompt, completion, liked)."""
    vote_rows, signal_rows = split_heldout_kto(kto, sources)
    votes = [(r["prompt"], r["completion"], bool(r["label"])) for r in vote_rows]
    for r in dpo:
        votes += [(r["prompt"], r["chosen"], True), (r["prompt"], r["rejected"], False)]
    signals = [(r["prompt"], r["completion"], bool(r["label"])) for r in signal_rows]
    return _distinct(votes), _distinct(signals)


def heldout_feedback(dataset_dir: Path) -> tuple[list[Labelled], list[Labelled]]:
    """(votes, signals) of a build's held-out split (see `labelled_feedback`)."""
    d = Path(dataset_dir)
    kto = dataset_rows(d / "heldout_kto.jsonl")
    return labelled_feedback(kto, dataset_rows(d / "heldout_dpo.jsonl"), heldout_kto_sources(d, len(kto)))
