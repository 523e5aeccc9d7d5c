"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from loopbot.storage.db import MIGRATIONS_DIR, current_revision, ours


def test_migrations_match_the_models(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False, "include_name": ours})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"


def test_one_head_and_database_at_head(engine):
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert len(heads) == 1, f"several migration heads: {heads}"
    assert current_revision(engine) == heads[0]


def test_chat_bots_migration_keeps_rows_and_their_references(tmp_path):
    """0005_chat_bots rebuilds `chats` on SQLite (its unique key changes) while messages point to it: the rows
    and references stay, old chats belong to the one-bot form (bot ""), and two bots may share a chat id."""
    from sqlalchemy import text

    from loopbot.storage import crud
    from loopbot.storage.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    upgrade(engine, "0003_web_side")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, platform, platform_user_id, display_name, consent, arena_consent, "
                          "is_admin, created_at) VALUES (1, 'telegram', '7', 'Ana', 1, 0, 0, '2026-11-01')"))
        conn.execute(text("INSERT INTO chats (id, platform, platform_chat_id, type, conversation_id, created_at) "
                          "VALUES (1, 'telegram', '-100', 'group', 'c1', '2026-11-01')"))
        conn.execute(text("INSERT INTO messages (id, chat_id, user_id, role, text, conversation_id, created_at) "
                          "VALUES (1, 1, 1, 'user', 'hola', 'c1', '2026-11-01')"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, bot FROM chats")).all() == [(1, "")]
        assert conn.execute(text("SELECT chat_id FROM messages")).scalar() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    _, old = crud.user_and_chat(engine, platform="telegram", platform_user_id=None, platform_chat_id="-100")
    _, other = crud.user_and_chat(engine, platform="telegram", platform_user_id=None, platform_chat_id="-100",
                                  bot="coachbot")
    assert old.id == 1 and other.id != 1 and other.bot == "coachbot"


def test_artifact_store_migration_keeps_adapters_and_adds_nullable_columns(engine):
    """0006_artifact_store on a database at 0005 holding a version: the row stays (no artifact: None), new rows
    record the store's URI and hash; it downgrades back to 0005 and upgrades again."""
    from sqlalchemy import text

    from loopbot.storage import crud
    from loopbot.storage.db import upgrade

    _downgrade(engine, "0005_chat_bots")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO adapters (persona, version, name, base_model, path, status, metrics, "
                          "dataset_manifest, created_at) VALUES ('coach', 1, 'coach-v1', 'm', '/a/v1', 'active', "
                          "'{}', '{}', '2026-11-01')"))
    upgrade(engine)
    old = crud.get_adapter(engine, persona="coach", version=1)
    assert (old.path, old.artifact_uri, old.artifact_sha256) == ("/a/v1", None, None)
    new = crud.create_adapter(engine, persona="coach", version=2, base_model="m", path="/a/v2",
                              artifact_uri="s3://b/adapters/coach/v2", artifact_sha256="ab" * 32)
    assert crud.get_adapter(engine, persona="coach", version=2).artifact_uri == new.artifact_uri
    _downgrade(engine, "0005_chat_bots")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM adapters")).scalar() == 2
    upgrade(engine)
    assert current_revision(engine) == "0006_artifact_store"
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM adapters"))


def _downgrade(engine, revision: str) -> None:
    from alembic import command

    from loopbot.storage.db import _alembic_config

    command.downgrade(_alembic_config(engine), revision)
