"""Imported seed examples, stored with their source for lineage."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from loopbot.storage.db import session_scope
from loopbot.storage.models import SeedExample

__all__ = ["content_hash", "add_seed_examples", "list_seed_examples", "seed_example_counts"]


def content_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def add_seed_examples(engine: Engine, *, persona: str, source: str, kind: str,
                      examples: list[dict], split: str = "train") -> tuple[int, int]:
    """Insert examples in ONE transaction: all or nothing. Returns (added, already present)."""
    added = dupes = 0
    with session_scope(engine) as s:
        existing = set(s.execute(select(SeedExample.content_hash).where(SeedExample.persona == persona,
                                                                        SeedExample.kind == kind)).scalars())
        for data in examples:
            h = content_hash(data)
            if h in existing:
                dupes += 1
                continue
            existing.add(h)
            s.add(SeedExample(persona=persona, kind=kind, split=split, source=source, data=data, content_hash=h))
            added += 1
    return added, dupes


def list_seed_examples(engine: Engine, *, persona: str, kind: str | None = None,
                       split: str | None = None) -> list[SeedExample]:
    with session_scope(engine) as s:
        q = select(SeedExample).where(SeedExample.persona == persona).order_by(SeedExample.id)
        if kind:
            q = q.where(SeedExample.kind == kind)
        if split:
            q = q.where(SeedExample.split == split)
        return list(s.execute(q).scalars())


def seed_example_counts(engine: Engine, *, persona: str | None = None) -> list[tuple[str, str, str, int]]:
    """(persona, source, kind, count) rows."""
    with session_scope(engine) as s:
        q = select(SeedExample.persona, SeedExample.source, SeedExample.kind, func.count()).group_by(
            SeedExample.persona, SeedExample.source, SeedExample.kind)
        if persona:
            q = q.where(SeedExample.persona == persona)
        return [tuple(r) for r in s.execute(q).all()]


