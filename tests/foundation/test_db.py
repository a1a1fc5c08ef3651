"""Migrations and storage, on SQLite and on a real PostgreSQL server."""

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import Session, SQLModel, select

import models.outbox  # noqa: F401  (its tables are part of the schema)
from models.db import current_revision, head_revision, make_engine, redact_db_url, upgrade
from models.tables import AuditLog, Role, User


def test_migrations_match_models_and_are_idempotent(db_url):
    upgrade(db_url)
    upgrade(db_url)  # a second run is a no-op
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision() == "0014"
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_timestamps_round_trip_as_aware_utc(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    paris = timezone(timedelta(hours=1))
    try:
        with Session(engine) as db:
            db.add(AuditLog(actor="t", action="x", entity="y", at=datetime(2026, 3, 1, 12, 0, tzinfo=paris)))
            db.commit()
        with Session(engine) as db:
            row = db.exec(select(AuditLog)).one()
        assert row.at == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
        assert row.at.tzinfo is not None and row.at.utcoffset() == timedelta(0)
    finally:
        engine.dispose()


def test_naive_datetimes_are_refused(sqlite_url):
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with Session(engine) as db:
        db.add(AuditLog(actor="t", action="x", entity="y", at=datetime(2026, 3, 1, 12, 0)))
        with pytest.raises(Exception, match="naive datetime"):
            db.commit()
    engine.dispose()


def test_unique_username(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with Session(engine) as db:
            db.add(User(username="ann", role=Role.admin, password_hash="x"))
            db.commit()
        with Session(engine) as db:
            db.add(User(username="ann", role=Role.viewer, password_hash="y"))
            with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
                db.commit()
    finally:
        engine.dispose()


def test_redact_db_url():
    assert redact_db_url("postgresql+psycopg://app:s3cret@db/x") == "postgresql+psycopg://app:***@db/x"


def test_data_folder_and_database_are_private(tmp_path):
    """Finding 11: data folder 755, database and evidence 644 (the database holds secrets and plates)."""
    import os
    import stat

    from baywarden.service import secure_data_dir
    from tests.foundation.helpers import make_settings

    data = tmp_path / "data"
    settings = make_settings(tmp_path, f"sqlite:///{data / 'baywarden.db'}")
    data.mkdir(mode=0o755, exist_ok=True)
    (data / "baywarden.db").write_bytes(b"")
    os.chmod(data, 0o755)
    os.chmod(data / "baywarden.db", 0o644)
    old = os.umask(0o022)
    try:
        secure_data_dir(settings)
        (data / "later.txt").write_text("x")
        assert stat.S_IMODE((data / "later.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert stat.S_IMODE((data / "baywarden.db").stat().st_mode) == 0o600


def test_lists_version_moves_on_every_change_to_lists_and_vehicles(db_url):
    # The engine caches the lists while this counter stands still (enforcement.service._lists): any
    # writer (ORM, plain SQL, another instance) must move it, and nothing else may.
    from sqlalchemy import text

    upgrade(db_url)
    engine = make_engine(db_url)

    def version() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version FROM lists_version WHERE name = 'lists'")).scalar_one()

    try:
        seen = [version()]
        for sql in (
            "INSERT INTO list_entries (list, plate, owner, reason, priority, created_by, created_at) "
            "VALUES ('white', 'AB123CD', '', '', 5, '', '2026-01-01 00:00:00+00:00')",
            "UPDATE list_entries SET reason = 'staff'",
            "DELETE FROM list_entries",
            "INSERT INTO vehicles (plate, owner_name, created_at) VALUES ('XY987ZW', 'A', '2026-01-01 00:00:00+00:00')",
            "UPDATE vehicles SET owner_name = 'B'",
            "DELETE FROM vehicles",
        ):
            with engine.begin() as conn:
                conn.execute(text(sql))
            seen.append(version())
        assert all(b > a for a, b in itertools.pairwise(seen)), seen
        with engine.begin() as conn:  # other tables leave it alone
            conn.execute(text("UPDATE consumer_cursors SET seq = seq + 1"))
        assert version() == seen[-1]
    finally:
        engine.dispose()
