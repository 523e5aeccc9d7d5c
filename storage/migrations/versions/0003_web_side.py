"""web side: one arena pick per visitor per unordered pair; admin sessions and one-time action confirmations

Comparisons get pair_low / pair_high (the two generation ids in order), filled from the existing rows, with a
check that they agree with generation_a_id / generation_b_id and a unique key on (visitor_id, pair_low, pair_high)
in place of (generation_a_id, generation_b_id, visitor_id), which let (x, y) and (y, x) both in. Where a visitor
already has two picks on one pair, the first (lowest id) stays and the later ones are deleted.

Revision ID: 0003_web_side
Revises: 0002_arena_consent
Create Date: 2026-11-29 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

revision = '0003_web_side'
down_revision = '0002_arena_consent'
branch_labels = None
depends_on = None

# names SQLite's unnamed unique keys in batch mode, so the old one can be dropped
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
LOW = "CASE WHEN generation_a_id < generation_b_id THEN generation_a_id ELSE generation_b_id END"
HIGH = "CASE WHEN generation_a_id < generation_b_id THEN generation_b_id ELSE generation_a_id END"
PAIR_ORDER_CHECK = f"pair_low = {LOW} AND pair_high = {HIGH}"  # as storage/models.py


def _unique_name(columns: list[str]) -> str:
    for uq in sa.inspect(op.get_bind()).get_unique_constraints("comparisons"):
        if uq["column_names"] == columns and uq.get("name"):
            return uq["name"]
    return NAMING["uq"].replace("%(table_name)s", "comparisons").replace("%(column_0_N_name)s", "_".join(columns))


def upgrade() -> None:
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pair_low', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('pair_high', sa.Integer(), nullable=True))
    op.execute(f"UPDATE comparisons SET pair_low = {LOW}, pair_high = {HIGH}")
    op.execute("DELETE FROM comparisons WHERE visitor_id IS NOT NULL AND id > (SELECT min(first.id) FROM comparisons "
               "first WHERE first.visitor_id = comparisons.visitor_id AND first.pair_low = comparisons.pair_low "
               "AND first.pair_high = comparisons.pair_high)")
    old = _unique_name(["generation_a_id", "generation_b_id", "visitor_id"])
    with op.batch_alter_table('comparisons', schema=None, naming_convention=NAMING) as batch_op:
        batch_op.alter_column('pair_low', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('pair_high', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_constraint(old, type_='unique')
        batch_op.create_unique_constraint('uq_comparisons_visitor_pair', ['visitor_id', 'pair_low', 'pair_high'])
        batch_op.create_check_constraint('ck_comparisons_pair_order', PAIR_ORDER_CHECK)

    op.create_table('admin_sessions',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('admin_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admin_sessions_expires_at'), ['expires_at'], unique=False)

    op.create_table('admin_nonces',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('admin_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admin_nonces_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('admin_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_admin_nonces_expires_at'))
    op.drop_table('admin_nonces')
    with op.batch_alter_table('admin_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_admin_sessions_expires_at'))
    op.drop_table('admin_sessions')
    with op.batch_alter_table('comparisons', schema=None, naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint('ck_comparisons_pair_order', type_='check')
        batch_op.drop_constraint('uq_comparisons_visitor_pair', type_='unique')
        batch_op.create_unique_constraint('comparisons_generation_a_id_generation_b_id_visitor_id_key', ['generation_a_id', 'generation_b_id', 'visitor_id'])
        batch_op.drop_column('pair_high')
        batch_op.drop_column('pair_low')
