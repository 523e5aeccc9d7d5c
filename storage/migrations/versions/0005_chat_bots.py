"""chats.bot: several bots per platform in one run; a chat is keyed by (platform, bot, platform chat id), so a group
with two bots holds two conversations. Existing chats get bot "" (the one-bot form: `[telegram] token_env`).

On SQLite the unique key can only change by rebuilding `chats`, which messages and generations point to: env.py
turns SQLite's foreign keys off around the migrations and checks them after (SQLite's documented procedure).

Revision ID: 0005_chat_bots
Revises: 0004_arena_indexes
Create Date: 2026-11-29 12:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005_chat_bots'
down_revision = '0004_arena_indexes'
branch_labels = None
depends_on = None

# names SQLite's unnamed unique keys in batch mode, so the old one can be dropped
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _unique_name(columns: list[str]) -> str:
    for uq in sa.inspect(op.get_bind()).get_unique_constraints("chats"):
        if uq["column_names"] == columns and uq.get("name"):
            return uq["name"]
    return NAMING["uq"].replace("%(table_name)s", "chats").replace("%(column_0_N_name)s", "_".join(columns))


def upgrade() -> None:
    old = _unique_name(["platform", "platform_chat_id"])
    with op.batch_alter_table('chats', schema=None, naming_convention=NAMING) as batch_op:
        batch_op.add_column(sa.Column('bot', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False,
                                      server_default=''))
        batch_op.drop_constraint(old, type_='unique')
        batch_op.create_unique_constraint('uq_chats_platform_bot_chat', ['platform', 'bot', 'platform_chat_id'])


def downgrade() -> None:
    # two bots' chats with one platform chat id cannot share the old key: refuse rather than delete conversations
    clash = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM chats c WHERE EXISTS (SELECT 1 FROM chats o WHERE o.platform = c.platform "
        "AND o.platform_chat_id = c.platform_chat_id AND o.id < c.id)")).scalar()
    if clash:
        raise RuntimeError(f"cannot downgrade below 0005_chat_bots: {clash} chats share a platform chat id with "
                           "another bot's chat")
    with op.batch_alter_table('chats', schema=None, naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint('uq_chats_platform_bot_chat', type_='unique')
        batch_op.create_unique_constraint('uq_chats_platform_platform_chat_id', ['platform', 'platform_chat_id'])
        batch_op.drop_column('bot')
