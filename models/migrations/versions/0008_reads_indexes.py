"""reads indexes: (plate, at, id) and (camera, at, id) for keyset pages of the reads log

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 08:58:30.156271
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New indexes first, so the reads log keeps an index while the old ones go.
    with op.batch_alter_table('plate_reads', schema=None) as batch_op:
        batch_op.create_index('ix_plate_reads_camera_at_id', ['camera', 'at', 'id'], unique=False)
        batch_op.create_index('ix_plate_reads_plate_at_id', ['plate', 'at', 'id'], unique=False)
        batch_op.drop_index(batch_op.f('ix_plate_reads_camera_at'))
        batch_op.drop_index(batch_op.f('ix_plate_reads_plate_at'))


def downgrade() -> None:
    with op.batch_alter_table('plate_reads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plate_reads_plate_at'), ['plate', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_plate_reads_camera_at'), ['camera', 'at'], unique=False)
        batch_op.drop_index('ix_plate_reads_plate_at_id')
        batch_op.drop_index('ix_plate_reads_camera_at_id')
