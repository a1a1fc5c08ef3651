"""outside sources: derived presences and per-source counters

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 06:10:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('source_presences',
    sa.Column('bay_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('camera', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('presence_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('plate', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('bay_id')
    )
    with op.batch_alter_table('source_presences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_presences_last_seen'), ['last_seen'], unique=False)
    op.create_table('source_counters',
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('accepted', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.PrimaryKeyConstraint('source')
    )


def downgrade() -> None:
    op.drop_table('source_counters')
    with op.batch_alter_table('source_presences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_presences_last_seen'))
    op.drop_table('source_presences')
