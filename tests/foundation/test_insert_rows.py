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
