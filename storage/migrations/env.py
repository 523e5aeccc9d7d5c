"""Alembic environment: runs against the engine loopbot hands it (never one built from alembic.ini)."""

from alembic import context
from sqlmodel import SQLModel

import loopbot.storage.models  # noqa: F401  (registers the tables)
from loopbot.storage.db import ours

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # batch mode rebuilds a table (copy, drop, rename); dropping one that other tables point to fails while
        # foreign keys are on. SQLite's documented procedure: off (only possible outside a transaction) around the
        # change, then check every reference before committing.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=sqlite,
                compare_type=True,
                include_name=ours,  # the job queue's and the scheduler's tables are not alembic's
            )
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left {len(broken)} broken references, e.g. {broken[0]}")
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
