"""Alembic environment: runs against the engine loopbot hands it (never one built from alembic.ini)."""

from alembic import context
from sqlmodel import SQLModel

import loopbot.storage.models  # noqa: F401  (registers the tables)

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
