"""token scopes: what a device token may post for (cameras, chargers)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 02:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=False, server_default='[]'))
    # Device tokens issued before scopes existed posted for every camera and charger; keep them
    # working after the upgrade, visibly (the token list shows the scopes; revoke and reissue to narrow).
    op.execute("UPDATE api_tokens SET scopes = '[\"camera:*\", \"charger:*\"]' WHERE role = 'device'")


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('scopes')
