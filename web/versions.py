"""How the pages name a version ("base" for the base model), and the per-version figures they show by that name."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from loopbot.storage import crud

BASE = "base"


def version_label(adapter_version: str | None) -> str:
    return adapter_version or BASE


def picks(engine: Engine, *, persona: str) -> list[tuple[str, str, str]]:
    """Every picked comparison (chat and web) as (version A, version B, pick), oldest pick first."""
    return [(version_label(a), version_label(b), pick)
            for a, b, pick in crud.pick_versions(engine, persona=persona)]


def thumbs_by_version(engine: Engine, *, persona: str) -> dict[str, tuple[int, int]]:
    """{version: (👍, 👎)} over every vote on this persona's replies."""
    return {version_label(v): counts for v, counts in crud.votes_by_version(engine, persona=persona).items()}
