"""timers: a partial index of the pending timers by bay

The engine marks a batch's cancelled timers done with `UPDATE timers ... WHERE bay_id IN (...) AND state =
'pending'`, once per transaction. With only (state, due_at) to go by, PostgreSQL walked every pending
timer of the site and filtered by bay: 20,000 rows and ~3.8 ms per transaction at 10,000 bays, against
0.2 ms through this index (EXPLAIN ANALYZE).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 23:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table('timers', schema=None) as batch_op:
        batch_op.create_index('ix_timers_bay_pending', ['bay_id'], unique=False,
                              postgresql_where=PENDING, sqlite_where=PENDING)


def downgrade() -> None:
    with op.batch_alter_table('timers', schema=None) as batch_op:
        batch_op.drop_index('ix_timers_bay_pending')
