"""adapters.artifact_uri / artifact_sha256: where the artifact store holds a version and its content hash
(docs/artifacts.md). Both nullable: versions trained before the store keep only their `path`.

Revision ID: 0006_artifact_store
Revises: 0005_chat_bots
Create Date: 2026-12-01 12:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006_artifact_store'
down_revision = '0005_chat_bots'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # adding nullable columns is a plain ALTER TABLE on SQLite too; batch mode keeps the drop in downgrade working
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('artifact_uri', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True))
        batch_op.add_column(sa.Column('artifact_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_column('artifact_sha256')
        batch_op.drop_column('artifact_uri')
