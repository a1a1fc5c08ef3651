"""`models.db.insert_rows`: many rows in one statement (JSON recordset on PostgreSQL, executemany on SQLite)
store exactly what the ORM would, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from models.db import insert_rows, make_engine, upgrade
from models.tables import PlateReadRow, Presence, StoredEvent

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url):
    upgrade(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_rows_are_stored_as_the_orm_stores_them(engine):
    events = StoredEvent.__table__
    cet = timezone(timedelta(hours=1))
    rows = [{"event_id": f"e{i}", "kind": "vehicle_arrived", "at": (T0 + timedelta(seconds=i)).astimezone(cet),
             "received_at": T0, "source": "source:x",
             "payload": {"plate": f"AB{i}", "nested": {"n": i, "none": None}, "text": "é \" \\ ✓"}}
            for i in range(300)]
    reads = [{"at": T0, "camera": "c1", "bay_id": "B1", "plate": "AB1", "raw_text": "AB 1", "confidence": 1,
              "char_confidences": [0.5, 1], "accepted": True, "reject_reason": None, "frame_path": None,
              "crop_path": "x/y.jpg"}]
    with Session(engine) as db:
        insert_rows(db, events, rows)
        insert_rows(db, PlateReadRow.__table__, reads)
        insert_rows(db, events, [])  # nothing to do
        db.commit()
    with Session(engine) as db:
        got = db.execute(sa_select(events).order_by(events.c.seq)).mappings().all()
        read = db.get(PlateReadRow, 1)
    assert [r["event_id"] for r in got] == [f"e{i}" for i in range(300)]  # in the order given
    assert got[7]["at"] == T0 + timedelta(seconds=7) and got[7]["at"].tzinfo == UTC
    assert got[7]["payload"] == rows[7]["payload"]
    assert read is not None and read.confidence == 1.0 and read.char_confidences == [0.5, 1]
    assert read.accepted is True and read.reject_reason is None and read.crop_path == "x/y.jpg"


def test_upsert_changes_only_the_columns_named(engine):
    table = Presence.__table__

    def row(pid: str, plate: str, camera: str) -> dict:
        return {"id": pid, "camera": camera, "bay_id": "B1", "plate": plate, "confidence": 0.9,
                "char_confidences": [], "first_seen": T0, "last_seen": T0, "departed_at": None,
                "frame_path": None, "crop_path": None}

    with Session(engine) as db:
        insert_rows(db, table, [row("p1", "AAA", "c1"), row("p2", "BBB", "c1")], ["id"], ["plate"])
        db.commit()
        insert_rows(db, table, [row("p1", "CCC", "c9"), row("p3", "DDD", "c9")], ["id"], ["plate"])
        db.commit()
    with Session(engine) as db:
        got = {p.id: (p.plate, p.camera) for p in db.exec(select(Presence))}
    assert got == {"p1": ("CCC", "c1"), "p2": ("BBB", "c1"), "p3": ("DDD", "c9")}


def test_naive_times_are_refused_as_by_the_column_type(engine):
    row = {"event_id": "e1", "kind": "k", "at": datetime(2026, 1, 1), "received_at": T0, "source": "s",
           "payload": {}}
    with Session(engine) as db, pytest.raises(Exception, match="naive datetime"):
        insert_rows(db, StoredEvent.__table__, [row])


def test_update_rows_changes_the_rows_of_their_keys_only(engine):
    from models.db import update_rows
    from models.tables import BayStateRow

    table = BayStateRow.__table__
    with Session(engine) as db:
        insert_rows(db, table, [{"bay_id": b, "state": {"n": 0}, "version": 1, "updated_at": T0} for b in "ABC"])
        db.commit()
        update_rows(db, table, [{"bay_id": "A", "state": {"n": 1}, "version": 2, "updated_at": T0 + timedelta(1)},
                                {"bay_id": "C", "state": {"n": 3}, "version": 5, "updated_at": T0},
                                {"bay_id": "Z", "state": {"n": 9}, "version": 9, "updated_at": T0}], "bay_id")
        db.commit()
    with Session(engine) as db:
        got = {r.bay_id: (r.state, r.version, r.updated_at) for r in db.exec(select(BayStateRow))}
    assert got == {"A": ({"n": 1}, 2, T0 + timedelta(1)), "B": ({"n": 0}, 1, T0), "C": ({"n": 3}, 5, T0)}


def test_upsert_only_if_changed_leaves_equal_rows_alone(engine):
    from models.tables import TimerRow

    table = TimerRow.__table__

    def row(tid: str, state: str) -> dict:
        return {"timer_id": tid, "bay_id": "B1", "visit_id": "v1", "kind": "overstay", "due_at": T0, "state": state}

    def versions() -> dict[str, str]:  # PostgreSQL: a row version changes with every update, even to equal values
        if engine.dialect.name != "postgresql":
            return {}
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT timer_id, xmin::text FROM timers").all())

    with Session(engine) as db:
        insert_rows(db, table, [row("t1", "pending"), row("t2", "done")])
        db.commit()
    before = versions()
    with Session(engine) as db:
        insert_rows(db, table, [row("t1", "pending"), row("t2", "pending"), row("t3", "pending")], ["timer_id"],
                    ["state"], only_if_changed="state")
        db.commit()
    after = versions()
    with Session(engine) as db:
        got = {t.timer_id: t.state for t in db.exec(select(TimerRow))}
    assert got == {"t1": "pending", "t2": "pending", "t3": "pending"}
    if before:
        assert after["t1"] == before["t1"] and after["t2"] != before["t2"]  # t1 was left alone
