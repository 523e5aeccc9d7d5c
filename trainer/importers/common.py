"""What every importer shares: the report, file errors that name file and line, JSONL reading (also of the dataset
files the trainer reads), one-transaction store."""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from loopbot.base.errors import UsageError
from loopbot.storage import crud
from loopbot.trainer.splits import is_heldout

MAX_ERRORS_SHOWN = 10
ROLES = ("system", "user", "assistant")


class ImportFileError(UsageError):
    """A file that cannot be imported; the message names the file and, where it applies, the line."""


@dataclass
class ImportReport:
    """What an import read, kept and dropped (with reasons), and what the database stored."""

    importer: str
    path: Path
    persona: str
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    validation: int = 0
    added: int = 0
    already_present: int = 0
    problems: list[str] = field(default_factory=list)
    unit: str = "records"

    @property
    def source(self) -> str:
        return f"{self.importer}:{self.path.name}"

    def drop(self, reason: str, problem: str | None = None) -> None:
        self.dropped[reason] += 1
        if problem and len(self.problems) < MAX_ERRORS_SHOWN:
            self.problems.append(problem)

    def summary(self) -> str:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        return (f"{self.path} -> persona {self.persona}: read {self.read} {self.unit}, kept {self.kept} examples "
                f"({self.validation} for validation), dropped {sum(self.dropped.values())} ({dropped}); "
                f"stored {self.added} new, {self.already_present} already present")

    def as_dict(self) -> dict:
        return {"importer": self.importer, "path": str(self.path), "persona": self.persona, "read": self.read,
                "kept": self.kept, "validation": self.validation, "dropped": dict(self.dropped),
                "added": self.added, "already_present": self.already_present, "problems": self.problems}


def open_text(path: str | Path) -> str:
    """The file's text (UTF-8, a BOM tolerated), or a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise ImportFileError(f"{p}: no such file")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise ImportFileError(f"{p}:{line}: not UTF-8 text ({e.reason})") from None


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line end) of a UTF-8 file (a BOM tolerated), read one line at a time so
    a large file is never held whole; a line that is not UTF-8 is a one-line error naming it."""
    p = Path(path)
    if not p.is_file():
        raise ImportFileError(f"{p}: no such file")
    with p.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ImportFileError(f"{p}:{number}: not UTF-8 text ({e.reason})") from None
            yield number, line.rstrip("\r\n")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is an error naming it.
    Lines end at "\n" only: JSON text may hold U+2028 and other line separators that str.splitlines would cut at."""
    p = Path(path)
    for number, line in enumerate(open_text(p).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ImportFileError(f"{p}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ImportFileError(f"{p}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def as_messages(value, default_role: str, where: str) -> list[dict]:
    """A string becomes one message of `default_role`; a list must hold {role, content} messages."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise ImportFileError(f"{where}: expected a string or a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ImportFileError(f"{where}: message {i} must be {{\"role\": one of {'/'.join(ROLES)}, "
                                  f"\"content\": text}}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def validation_split(key: str, fraction: float) -> str:
    return "validation" if is_heldout(f"seed:{key}", fraction) else "train"


def store_examples(engine: Engine, report: ImportReport, examples: list[tuple[str, str, dict]]) -> ImportReport:
    """Store (kind, split, data) examples in ONE transaction: all or nothing. Known examples are skipped."""
    added, present = crud.store_seed_examples(engine, persona=report.persona, source=report.source, examples=examples)
    report.added += added
    report.already_present += present
    return report
