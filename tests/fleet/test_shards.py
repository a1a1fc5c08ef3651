"""Shard cursors across a change of the shard count (no PostgreSQL needed: the logic is the same)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session

from models.db import make_engine, upgrade
from models.tables import ConsumerCursor
from service.enforcement_control import EnforcementComponent, cursor_name
from service.inbox import InboxIndex
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


def test_a_shard_walks_every_sequence_number_but_loads_only_its_own_events(tmp_path, db_url):
    """Eight shards each reading every payload was the fleet's read cost: a shard now sees each row's
    sequence, kind and routing ids, and only its own events' payloads leave the database."""
    from datetime import timedelta

    from enforcement.service import EnforcementService
    from models.events import EventEnvelope, PlateRead, TransactionStarted, VehicleArrived
    from models.eventstore import ingest
    from models.settings import EnforcementSettings

    upgrade(db_url)
    t0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    cfg = EnforcementSettings(bays=[{"bay_id": "A1", "site": "north", "charge_point_id": "CPA", "connector_id": 1},
                                    {"bay_id": "B1", "site": "south", "charge_point_id": "CPB", "connector_id": 1}])
    svc = EnforcementService(make_engine(db_url), cfg, {"cam": ["A1", "B1"]}, lambda: t0)
    events = [
        VehicleArrived(at=t0, presence_id="pa", camera="cam", bay_id="A1", plate="AB123CD", confidence=0.97),
        VehicleArrived(at=t0, presence_id="pb", camera="cam", bay_id="B1", plate="XY987ZZ", confidence=0.97),
        TransactionStarted(at=t0, charge_point_id="CPB", transaction_id="T1", connector_id=1),
        PlateRead(at=t0, camera="cam", bay_id="B1", plate="AB123CD", confidence=0.9),
        VehicleArrived(at=t0, presence_id="pz", camera="cam", bay_id="Z9", plate="ZZ111ZZ", confidence=0.97),
    ]
    with Session(svc.engine) as db:
        for k, e in enumerate(events):
            ingest(db, EventEnvelope(event_id=f"event-{k:04d}", event=e), source="test", now=t0)
        db.commit()
    later = t0 + timedelta(minutes=1)
    index = InboxIndex()  # the shards of one instance share it
    with Session(svc.engine) as db:
        rows, own, more = EnforcementComponent._read_inbox(db, svc, 0, 100, frozenset({"B1"}), False, later, index)
        assert more is False  # 5 rows, fewer than asked for
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert sorted(own) == [2, 3]  # B1's arrival and its charger's transaction; not A1, the read or Z9
        assert own[2][0] == "event-0001" and own[3][1]["charge_point_id"] == "CPB"
        _, first, _ = EnforcementComponent._read_inbox(db, svc, 0, 100, frozenset({"A1"}), True, later, index)
        assert sorted(first) == [1, 5]  # the shard that reports unknown bays gets Z9's event
        _, tail, _ = EnforcementComponent._read_inbox(db, svc, 2, 100, frozenset({"B1"}), False, later, index)
        assert sorted(tail) == [3]


def test_a_shard_stops_before_a_young_sequence_gap_and_passes_an_old_one(tmp_path, db_url):
    """A missing sequence number may be a transaction still committing: the read stops before it until
    GAP_GRACE has passed, then walks past it (a rolled-back number never comes)."""
    from datetime import timedelta

    from sqlalchemy import delete

    from enforcement.service import EnforcementService
    from models.events import EventEnvelope, VehicleArrived
    from models.eventstore import ingest
    from models.settings import EnforcementSettings
    from models.tables import StoredEvent
    from service.inbox import GAP_GRACE

    upgrade(db_url)
    t0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    svc = EnforcementService(make_engine(db_url), EnforcementSettings(bays=[{"bay_id": "A1"}]), {"cam": ["A1"]},
                             lambda: t0)
    with Session(svc.engine) as db:
        for k in range(3):
            ev = VehicleArrived(at=t0, presence_id=f"p{k}", camera="cam", bay_id="A1", plate="AB123CD", confidence=0.9)
            ingest(db, EventEnvelope(event_id=f"event-{k:04d}", event=ev), source="test", now=t0)
        db.commit()
        db.execute(delete(StoredEvent).where(StoredEvent.seq == 2))
        db.commit()
        index = InboxIndex()
        rows, own, _ = EnforcementComponent._read_inbox(db, svc, 0, 100, frozenset({"A1"}), True, t0, index)
        assert [r.seq for r in rows] == [1] and sorted(own) == [1]
        later = t0 + GAP_GRACE + timedelta(seconds=1)
        index.wake()  # the engine's next look (a wake-up, or its poll after MIN_AGE_S)
        rows, own, _ = EnforcementComponent._read_inbox(db, svc, 0, 100, frozenset({"A1"}), True, later, index)
        assert [r.seq for r in rows] == [1, 3] and sorted(own) == [1, 3]


def test_an_instance_walks_the_inbox_once_for_all_its_shards(tmp_path, db_url):
    """Eight shards on one instance each walked the inbox's new rows, a query apiece per wake-up; the
    instance's index now reads them once and serves each shard what its own walk would have returned."""
    from datetime import timedelta

    from sqlalchemy import delete

    from models.events import EventEnvelope, VehicleArrived
    from models.eventstore import ingest
    from models.tables import StoredEvent
    from service.inbox import GAP_GRACE, walk_inbox

    upgrade(db_url)
    engine = make_engine(db_url)
    t0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

    def store(first: int, n: int) -> None:
        with Session(engine) as db:
            for k in range(first, first + n):
                ev = VehicleArrived(at=t0, presence_id=f"p{k}", camera="cam", bay_id=f"B{k % 8}", plate="AB123CD",
                                    confidence=0.9)
                ingest(db, EventEnvelope(event_id=f"event-{k:04d}", event=ev), source="test", now=t0)
            db.commit()

    store(0, 10)
    index = InboxIndex(keep=12)
    later = t0 + timedelta(minutes=1)
    with Session(engine) as db:
        index.wake()
        for _shard in range(8):  # eight shards woken by one commit, all at the head they walked to
            rows, more = index.rows_after(db, 0, 100, later)
            assert [r.seq for r in rows] == list(range(1, 11)) and more is False
        assert index.reads == 1
        rows, more = index.rows_after(db, 4, 3, later)  # a shard further on, reading in steps
        assert [r.seq for r in rows] == [5, 6, 7] and more is True and index.reads == 1
        assert index.rows_after(db, 10, 100, later) == ([], False) and index.reads == 1  # no wake-up yet
    store(10, 5)
    with Session(engine) as db:
        index.wake()
        rows, _ = index.rows_after(db, 10, 100, later)
        assert [r.seq for r in rows] == [11, 12, 13, 14, 15] and index.reads == 2
        rows, _ = index.rows_after(db, 7, 100, later)
        assert [r.seq for r in rows] == list(range(8, 16)) and index.reads == 2
        # 15 rows walked, 12 kept: a shard behind them walks the database itself, and gets the same.
        assert index.rows_after(db, 1, 100, later) == walk_inbox(db, 1, 100, later) and index.reads == 2
    store(15, 3)
    with Session(engine) as db:
        db.execute(delete(StoredEvent).where(StoredEvent.seq == 16))  # still committing, or rolled back
        db.commit()
        index.wake()
        rows, _ = index.rows_after(db, 15, 100, t0)
        assert rows == []  # stops before the young gap
        index.wake()
        rows, _ = index.rows_after(db, 15, 100, t0 + GAP_GRACE + timedelta(seconds=1))
        assert [r.seq for r in rows] == [17, 18]  # an old gap: walked past, as a shard's own walk does
    with Session(engine) as db:
        # A read larger than what is kept: a shard whose rows it trimmed walks on its own, never skips.
        small = InboxIndex(keep=2)
        small.wake()
        rows, more = small.rows_after(db, 0, 3, later)
        assert [r.seq for r in rows] == [1, 2, 3] and more is True
        # At the end of a full read the next ask reads on at once (no wake-up needed, no empty answers
        # saying "more" while the shard spins).
        rows, more = small.rows_after(db, 3, 3, later)
        assert [r.seq for r in rows] == [4, 5, 6] and more is True and small.reads == 2
