"""Shard cursors across a change of the shard count (no PostgreSQL needed: the logic is the same)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session

from models.db import make_engine, upgrade
from models.tables import ConsumerCursor
from service.enforcement_control import EnforcementComponent, cursor_name
from tests.foundation.helpers import make_settings


class _Ctx:
    def __init__(self, settings, engine):
        self.settings, self.engine, self.leases = settings, engine, None


def _component(tmp_path, url, shards):
    settings = make_settings(tmp_path, url, ha={"shards": shards})
    return EnforcementComponent(_Ctx(settings, make_engine(url)))  # type: ignore[arg-type]


def test_new_shard_cursors_start_where_the_old_layout_was_and_a_fresh_database_at_zero(tmp_path, sqlite_url):
    upgrade(sqlite_url)
    two = _component(tmp_path, sqlite_url, 2)
    with Session(two.ctx.engine) as db:
        assert two._start_seq(db, 0) == 0 and two._start_seq(db, 1) == 0  # fresh: nothing skipped
        # A single engine had applied up to 40; then the fleet went to two shards.
        db.add(ConsumerCursor(name=cursor_name(0, 1), seq=40, updated_at=datetime.now(UTC)))
        db.commit()
        assert cursor_name(0, 1) == "enforcement" and cursor_name(1, 2) == "enforcement.1of2"
        assert two._start_seq(db, 0) == 40 and two._start_seq(db, 1) == 40
        # Shard 1 of 2 moved on to 55 and shard 0 to 50; going to four shards starts at the slowest.
        db.add(ConsumerCursor(name=cursor_name(0, 2), seq=50, updated_at=datetime.now(UTC)))
        db.add(ConsumerCursor(name=cursor_name(1, 2), seq=55, updated_at=datetime.now(UTC)))
        db.commit()
        four = _component(tmp_path, sqlite_url, 4)
        assert [four._start_seq(db, k) for k in range(4)] == [50, 50, 50, 50]
        assert two._start_seq(db, 1) == 55  # an existing cursor is where it is
