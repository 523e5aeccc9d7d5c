"""The migration that makes the database keep one arena pick per visitor per unordered pair, on existing data."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from loopbot.storage.db import make_engine, upgrade
from tests.helpers.databases import create_postgres_database, drop_postgres_database, postgres_unreachable_reason


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_engine(request, tmp_path):
    """An empty database at the first revision (before the pair columns)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/old.db"
    else:
        reason = postgres_unreachable_reason()
        if reason:
            pytest.skip(reason)
        url = create_postgres_database()
    eng = make_engine(url)
    upgrade(eng, "0001")
    yield eng
    eng.dispose()
    if request.param == "postgres":
        drop_postgres_database(url)


def _seed_0001(eng) -> None:
    now = "2026-01-01 00:00:00"
    with eng.begin() as c:
        c.execute(text("INSERT INTO users (id, platform, platform_user_id, display_name, consent, is_admin, "
                       "created_at) VALUES (1, 'telegram', 'u', '', true, false, :t)"), {"t": now})
        c.execute(text("INSERT INTO chats (id, platform, platform_chat_id, type, conversation_id, created_at) "
                       "VALUES (1, 'telegram', 'c', 'private', '', :t)"), {"t": now})
        for i in range(1, 5):
            c.execute(text("INSERT INTO messages (id, chat_id, role, text, conversation_id, created_at) "
                           "VALUES (:i, 1, 'assistant', 'x', '', :t)"), {"i": i, "t": now})
            c.execute(text("INSERT INTO generations (id, message_id, chat_id, persona, backend, sampling, prompt, "
                           "status, in_history, created_at) VALUES (:i, :i, 1, 'coach', '', '{}', '[]', 'ok', true, "
                           ":t)"), {"i": i, "t": now})
        rows = [(1, 1, 2, "v1", None, "a"), (2, 2, 1, "v1", None, "b"),  # the race the old key let through
                (3, 2, 1, "v2", None, "tie"), (4, 3, 4, "v1", None, "a"), (5, 4, 3, "v1", None, "b"),
                (6, 1, 2, None, 1, "a"), (7, 2, 1, None, 1, "b")]  # chat comparisons keep their own key
        for cid, a, b, visitor, user, pick in rows:
            c.execute(text("INSERT INTO comparisons (id, persona, generation_a_id, generation_b_id, user_id, "
                           "visitor_id, pick, source, created_at) VALUES (:id, 'coach', :a, :b, :u, :v, :p, "
                           ":s, :t)"), {"id": cid, "a": a, "b": b, "u": user, "v": visitor, "p": pick,
                                        "s": "web" if visitor else "chat", "t": now})


def test_the_pair_migration_keeps_the_first_pick_per_visitor_per_unordered_pair(old_engine):
    _seed_0001(old_engine)
    upgrade(old_engine)
    with old_engine.connect() as c:
        rows = c.execute(text("SELECT id, pair_low, pair_high, visitor_id, pick FROM comparisons ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, 1, 2, "v1", "a"), (3, 1, 2, "v2", "tie"), (4, 3, 4, "v1", "a"),
                                        (6, 1, 2, None, "a"), (7, 1, 2, None, "b")]
    with pytest.raises(IntegrityError), old_engine.begin() as c:
        c.execute(text("INSERT INTO comparisons (persona, generation_a_id, generation_b_id, visitor_id, source, "
                       "created_at, pair_low, pair_high) VALUES ('coach', 2, 1, 'v2', 'web', '2026-01-01', 1, 2)"))
    with pytest.raises(IntegrityError), old_engine.begin() as c:  # the pair columns must say the pair
        c.execute(text("INSERT INTO comparisons (persona, generation_a_id, generation_b_id, visitor_id, source, "
                       "created_at, pair_low, pair_high) VALUES ('coach', 2, 1, 'v3', 'web', '2026-01-01', 2, 2)"))
