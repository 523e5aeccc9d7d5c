"""users.arena_consent: may a user's chat messages appear in the public web arena (/arena on|off); off for
everyone until they say so

Revision ID: 0002_arena_consent
Revises: 0001
Create Date: 2026-11-29 12:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002_arena_consent'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch_op:
        batch_op.add_column(sa.Column('arena_consent', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch_op:
        batch_op.drop_column('arena_consent')
