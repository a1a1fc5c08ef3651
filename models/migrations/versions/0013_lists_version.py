"""lists version: a counter bumped by triggers on every change to list_entries and vehicles

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 21:30:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

TABLES = ("list_entries", "vehicles")
BUMP = "UPDATE lists_version SET version = version + 1 WHERE name = 'lists'"


def upgrade() -> None:
    op.create_table('lists_version',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.execute("INSERT INTO lists_version (name, version) VALUES ('lists', 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION bw_bump_lists_version() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER bw_{table}_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION bw_bump_lists_version()"
            )
    else:
        for table in TABLES:
            for what in ("INSERT", "UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER bw_{table}_version_{what.lower()} AFTER {what} ON {table} "
                    f"BEGIN {BUMP}; END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS bw_{table}_version ON {table}")
        op.execute("DROP FUNCTION IF EXISTS bw_bump_lists_version()")
    else:
        for table in TABLES:
            for what in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS bw_{table}_version_{what}")
    op.drop_table('lists_version')
