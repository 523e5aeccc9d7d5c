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
    # a plain ADD COLUMN on both databases: a batch (copy-and-move) of `users` on SQLite would drop a table that
    # messages, chats and votes point to, which SQLite refuses once foreign keys are on and rows exist
    op.add_column('users', sa.Column('arena_consent', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column('users', 'arena_consent')  # SQLite has DROP COLUMN since 3.35 (2021)
