"""Imported seed examples, stored with their source for lineage."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from sqlalchemy import func, insert, select

from loopbot.storage.db import DB, transaction
from loopbot.storage.models import SeedExample, utcnow

STORE_BATCH = 1000  # rows per bulk insert when storing imported examples

__all__ = ["add_seed_examples", "content_hash", "list_seed_examples", "seed_example_counts", "store_seed_examples"]


def content_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def add_seed_examples(db: DB, *, persona: str, source: str, kind: str,
                      examples: list[dict], split: str = "train") -> tuple[int, int]:
    """Insert examples of one kind and split in ONE transaction: all or nothing. Returns (added, already present)."""
    return store_seed_examples(db, persona=persona, source=source,
                               examples=[(kind, split, data) for data in examples])


def store_seed_examples(db: DB, *, persona: str, source: str,
                        examples: Iterable[tuple[str, str, dict]]) -> tuple[int, int]:
    """Insert (kind, split, data) examples in ONE transaction: all or nothing; an example already stored for the
    persona with the same kind and content is skipped. Returns (added, already present). Rows go in as bulk inserts
    of STORE_BATCH, so memory holds one batch of rows, not an object per example of a large export."""
    added = dupes = 0
    batch: list[dict] = []
    with transaction(db) as s:
        existing = set(s.execute(select(SeedExample.kind, SeedExample.content_hash)
                                 .where(SeedExample.persona == persona)).tuples())
        for kind, split, data in examples:
            h = content_hash(data)
            if (kind, h) in existing:
                dupes += 1
                continue
            existing.add((kind, h))
            batch.append({"persona": persona, "kind": kind, "split": split, "source": source, "data": data,
                          "content_hash": h, "created_at": utcnow()})
            added += 1
            if len(batch) >= STORE_BATCH:
                s.execute(insert(SeedExample), batch)
                batch = []
        if batch:
            s.execute(insert(SeedExample), batch)
    return added, dupes


def list_seed_examples(db: DB, *, persona: str, kind: str | None = None,
                       split: str | None = None) -> list[SeedExample]:
    with transaction(db) as s:
        q = select(SeedExample).where(SeedExample.persona == persona).order_by(SeedExample.id)
        if kind:
            q = q.where(SeedExample.kind == kind)
        if split:
            q = q.where(SeedExample.split == split)
        return list(s.execute(q).scalars())


def seed_example_counts(db: DB, *, persona: str) -> list[tuple[str, str, str, int]]:
    """(source, kind, split, count) rows of the persona's seed examples."""
    with transaction(db) as s:
        return [tuple(r) for r in s.execute(
            select(SeedExample.source, SeedExample.kind, SeedExample.split, func.count())
            .where(SeedExample.persona == persona)
            .group_by(SeedExample.source, SeedExample.kind, SeedExample.split)).all()]
