"""arena indexes: a persona's replies and one message's replies in id order, user messages by prompt text

The arena samples a window of a persona's replies at a random id and looks for replies of another version to the
same prompt text through indexes, so its work does not grow with the replies stored:
- generations (persona, id) replaces (persona); generations (prompt_message_id, id) replaces (prompt_message_id)
  (each serves every query the old one did);
- messages: an index on the first 64 characters of the trimmed text of user messages, then id (partial: role =
  'user'; an expression index, so it is written here by hand: autogenerate does not compare expression indexes).

Revision ID: 0004_arena_indexes
Revises: 0003_web_side
Create Date: 2026-11-29 13:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0004_arena_indexes'
down_revision = '0003_web_side'
branch_labels = None
depends_on = None

ARENA_PROMPT_KEY = "substr(ltrim(rtrim(text)), 1, 64)"  # as storage/models.py


def upgrade() -> None:
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_index('ix_generations_persona')
        batch_op.drop_index('ix_generations_prompt_message_id')
        batch_op.create_index('ix_generations_persona_id', ['persona', 'id'], unique=False)
        batch_op.create_index('ix_generations_prompt_message_id_id', ['prompt_message_id', 'id'], unique=False)
    op.create_index('ix_messages_arena_prompt', 'messages', [sa.text(ARENA_PROMPT_KEY), 'id'], unique=False,
                    sqlite_where=sa.text("role = 'user'"), postgresql_where=sa.text("role = 'user'"))


def downgrade() -> None:
    op.drop_index('ix_messages_arena_prompt', table_name='messages')
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_index('ix_generations_prompt_message_id_id')
        batch_op.drop_index('ix_generations_persona_id')
        batch_op.create_index('ix_generations_prompt_message_id', ['prompt_message_id'], unique=False)
        batch_op.create_index('ix_generations_persona', ['persona'], unique=False)
