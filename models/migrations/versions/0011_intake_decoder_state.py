"""intake decoder state per charger, shared by every instance

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('intake_decoder_states',
    sa.Column('charge_point_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('charge_point_id')
    )


def downgrade() -> None:
    op.drop_table('intake_decoder_states')
