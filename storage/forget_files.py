"""/forget on disk: the dataset builds (`<data_dir>/datasets/<persona>/<build id>/`) that hold a forgotten user's
texts are deleted whole, and the evaluation reports that quote them lose those samples.

Dataset files hold the texts as the builder wrote them: a whole message per turn (two user messages in a row joined
by a blank line) with e-mail addresses and phone numbers replaced by [email] and [phone] when scrubbing is on. So a
text matches a turn, or one of the blank-line separated parts of a merged turn, when the turn is the text itself
or the text with any run of digits or e-mail address replaced by something of about its length. A text that is all
digits and addresses (nothing left of it after scrubbing) matches only verbatim.

Builds published to a remote artifact store (s3://, docs/artifacts.md) are found by the URIs their events recorded
(`crud.dataset_build_paths`), searched in place and deleted from the store whole, so no forgotten text survives in
the bucket. The store's endpoint comes from the process's settings (open_store) or the AWS_* variables."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from loopbot.base import artifacts

log = logging.getLogger(__name__)

# what the PII scrubber may replace: an e-mail address, or a run of digits with the separators numbers are written with
_MAYBE_PII = re.compile(r"[\w.+\-]*@[\w.\-]+|\+?\(?\d(?:[\d\s().\-/]*\d)?")
DELETED = "[deleted]"


class TextMatcher:
    """Whether a string written by the dataset builder carries one of `texts` (see the module's note)."""

    def __init__(self, texts: Iterable[str]):
        self._checks: list[tuple[str, re.Pattern]] = []
        for text in {t for t in texts if t and t.strip()}:
            safe, pattern, pos = [], [], 0
            for m in _MAYBE_PII.finditer(text):
                safe.append(text[pos:m.start()])
                pattern += [re.escape(text[pos:m.start()]), f"[^\\x00]{{0,{len(m.group()) + 16}}}?"]
                pos = m.end()
            safe.append(text[pos:])
            pattern.append(re.escape(text[pos:]))
            if not any(c.isalnum() for piece in safe for c in piece):
                pattern = [re.escape(text)]  # nothing of it would survive scrubbing: only the verbatim text
                safe = [text]
            body = "".join(pattern)
            self._checks.append((max(safe, key=len), re.compile(r"(?:\A|(?<=\n\n))" + body + r"(?=\n\n|\Z)")))

    def __bool__(self) -> bool:
        return bool(self._checks)

    def candidates(self, blob: str) -> list[re.Pattern]:
        """The patterns worth trying on the strings of `blob` (their longest literal part occurs in it)."""
        return [pattern for literal, pattern in self._checks if literal in blob]

    def matches(self, value: str, patterns: list[re.Pattern] | None = None) -> bool:
        """Whether `value` carries one of the texts (trying only `patterns`, from `candidates`, when given)."""
        return any(p.search(value) for p in (patterns if patterns is not None else [p for _, p in self._checks]))


def forget_in_files(texts: Iterable[str], *, datasets_dir: Path, reports_dir: Path | None = None,
                    build_dirs: Iterable[str | Path] = ()) -> dict[str, list[str]]:
    """Delete every dataset build that holds one of `texts` (those under `datasets_dir`, and `build_dirs`: where
    builds with a chosen directory went) and take the samples quoting them out of the reports under `reports_dir`.
    Returns {"dataset_builds": [deleted directories], "reports": [rewritten files]}."""
    matcher = TextMatcher(texts)
    done: dict[str, list[str]] = {"dataset_builds": [], "reports": []}
    if not matcher:
        return done
    build_dirs = [str(b) for b in build_dirs]
    for build in _builds(Path(datasets_dir), [b for b in build_dirs if not artifacts.is_remote(b)]):
        if any(_file_holds(path, matcher) for path in sorted(build.glob("*.jsonl"))):
            shutil.rmtree(build)
            done["dataset_builds"].append(str(build))
            log.info("/forget: deleted the dataset build %s", build)
    for uri in sorted({b for b in build_dirs if artifacts.is_remote(b)}):
        if _published_build_holds(uri, matcher):
            artifacts.delete(uri)
            done["dataset_builds"].append(uri)
            log.info("/forget: deleted the published dataset build %s", uri)
    if reports_dir is not None and Path(reports_dir).is_dir():
        for path in sorted(Path(reports_dir).rglob("*.json")):
            if _redact_report(path, matcher):
                done["reports"].append(str(path))
    return done


def _builds(datasets_dir: Path, extra: Iterable[str | Path]) -> Iterator[Path]:
    """Every finished build directory (one with a manifest.json), each once."""
    seen: set[Path] = set()
    found = list(datasets_dir.glob("*/*/manifest.json")) if datasets_dir.is_dir() else []
    found += [Path(p) / "manifest.json" for p in extra]
    for manifest in found:
        build = manifest.parent
        if manifest.is_file() and build.resolve() not in seen:
            seen.add(build.resolve())
            yield build


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _published_build_holds(uri: str, matcher: TextMatcher) -> bool:
    """Whether a build in the artifact store (its .jsonl files, read in place) holds a forgotten text; one whose
    manifest is gone (deleted, or never complete) is searched too when its files are still there."""
    try:
        names = list(artifacts.read_manifest(uri)["files"])
    except artifacts.ArtifactError:
        names = artifacts.list_members(uri)
    for name in sorted(n for n in names if n.endswith(".jsonl")):
        with artifacts.open_member(uri, name) as f:
            if _lines_hold(f, matcher):
                return True
    return False


def _file_holds(path: Path, matcher: TextMatcher) -> bool:
    with path.open(encoding="utf-8") as f:
        return _lines_hold(f, matcher)


def _lines_hold(lines: Iterable[str], matcher: TextMatcher) -> bool:
    for line in lines:
        if not line.strip():
            continue
        try:
            strings = list(_strings(json.loads(line)))
        except ValueError:
            strings = [line]
        patterns = matcher.candidates("\x00".join(strings))
        if patterns and any(matcher.matches(s, patterns) for s in strings):
            return True
    return False


def _redact_report(path: Path, matcher: TextMatcher) -> bool:
    """Drop the entries of a report's lists (its samples) that quote a forgotten text, and replace any other
    string that does with [deleted]; True when the file changed."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    patterns = matcher.candidates("\x00".join(_strings(report)))
    if not patterns:
        return False

    def holds(value) -> bool:
        return any(matcher.matches(s, patterns) for s in _strings(value))

    def redact(value):
        if isinstance(value, str):
            return DELETED if matcher.matches(value, patterns) else value
        if isinstance(value, dict):
            return {k: redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [redact(v) for v in value if not holds(v)]
        return value

    cleaned = redact(report)
    if cleaned == report:
        return False
    path.write_text(json.dumps(cleaned, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("/forget: took forgotten texts out of the report %s", path)
    return True
