"""Shared fixtures: a controllable clock, per-test databases (SQLite and a real PostgreSQL) and a
logged-in HTTP client. Under CI=true a missing PostgreSQL is a failure, never a skip."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = Path(os.environ.get("BAYWARDEN_DATASETS") or SHARED / "datasets")
IN_CI = os.environ.get("CI", "").lower() == "true"


# Quiet two kinds of noise that used to end a test run with "--- Logging error ---" blocks (issue 18
# row 8): aiosmtpd's controller thread logging a client's goodbye after pytest closed its streams, and
# SQLAlchemy finalising pooled connections of per-test PostgreSQL databases already dropped WITH (FORCE).
logging.getLogger("mail.log").setLevel(logging.WARNING)
logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)


def need(condition: bool, reason: str) -> None:
    """Skip when a real component is missing on a developer machine; fail under CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def _missing_dataset(excinfo: pytest.ExceptionInfo | None) -> bool:
    """A test stopped by the shared datasets being absent (a clone without ../shared)."""
    if excinfo is None or DATASETS.is_dir():
        return False
    return isinstance(excinfo.value, FileNotFoundError | OSError) or str(DATASETS) in str(excinfo.value)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    _skip_without_datasets(outcome)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    _skip_without_datasets(outcome)


def _skip_without_datasets(outcome) -> None:  # type: ignore[no-untyped-def]
    """Outside CI, a test that needs `../shared/datasets` on a machine without it is skipped with that
    reason, not failed with a FileNotFoundError; under CI=true it still fails (CI must provide them)."""
    if outcome.excinfo is None or IN_CI:
        return
    info = pytest.ExceptionInfo.from_exc_info(outcome.excinfo)
    if _missing_dataset(info):
        outcome.force_exception(pytest.skip.Exception(
            f"needs the shared datasets at {DATASETS} (../shared/datasets, or set BAYWARDEN_DATASETS)",
            _use_item_location=True))


class FakeClock:
    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    admin = os.environ.get("BAYWARDEN_TEST_POSTGRES_URL")
    need(bool(admin), "set BAYWARDEN_TEST_POSTGRES_URL (scripts/start-test-postgres.sh prints it)")
    assert admin
    name = f"bw_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"
