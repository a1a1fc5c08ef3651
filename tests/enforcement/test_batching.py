"""The engine's batches: a backlog applied 50 events per transaction stores exactly what the same
events store one per transaction, in a few statements whatever the batch's size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event
from sqlmodel import Session, select

from enforcement.service import EnforcementService
from models.db import make_engine, upgrade
from models.events import (
    ChargingIdle,
    TransactionEnded,
    TransactionStarted,
    VehicleArrived,
    VehicleDeparted,
)
from models.settings import EnforcementSettings
from models.tables import BayStateRow, Penalty, TimerRow, VisitRow

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def service(url: str, bays: int) -> EnforcementService:
    upgrade(url)
    cfg = EnforcementSettings(
        rules={"idle_grace_min": 10, "idle_fee_per_min": "0.50", "warn_before_idle": False,
               "return_ban_hours": 2},
        bays=[{"bay_id": f"B{i}", "charge_point_id": f"CP{i}", "connector_id": 1} for i in range(bays)],
    )
    return EnforcementService(make_engine(url), cfg, {"cam": [f"B{i}" for i in range(bays)]}, lambda: T0)


def visit(i: int, t: datetime, plate: str) -> list:
    """Arrive, charge, go idle, stay 30 minutes idle (a fee), unplug, leave."""
    bay, cp = f"B{i}", f"CP{i}"
    return [
        VehicleArrived(at=t, presence_id=f"p{i}-{t:%H%M}", camera="cam", bay_id=bay, plate=plate, confidence=0.97),
        TransactionStarted(at=t + timedelta(minutes=1), charge_point_id=cp, transaction_id=f"T{i}-{t:%H%M}",
                           connector_id=1),
        ChargingIdle(at=t + timedelta(minutes=20), charge_point_id=cp, transaction_id=f"T{i}-{t:%H%M}",
                     connector_id=1),
        TransactionEnded(at=t + timedelta(minutes=60), charge_point_id=cp, transaction_id=f"T{i}-{t:%H%M}",
                         connector_id=1),
        VehicleDeparted(at=t + timedelta(minutes=61), presence_id=f"p{i}-{t:%H%M}", camera="cam", bay_id=bay,
                        plate=plate, first_seen=t, last_seen=t + timedelta(minutes=60)),
    ]


def feed() -> list:
    # Two bays, the same car twice in B0 (a return inside the ban), events of both bays interleaved.
    a = visit(0, T0, "AB123CD") + visit(0, T0 + timedelta(minutes=70), "AB123CD")
    b = visit(1, T0 + timedelta(minutes=3), "XY987ZZ") + visit(1, T0 + timedelta(minutes=90), "XY987ZZ")[:2]
    out = sorted(a + b, key=lambda e: e.at)
    return [(e, e.at + timedelta(seconds=1)) for e in out]


def snapshot(svc: EnforcementService) -> dict:
    with Session(svc.engine) as db:
        return {
            "bays": {r.bay_id: (r.state, r.version) for r in db.exec(select(BayStateRow))},
            "visits": {r.visit_id: (r.plate, r.departed_at, r.close_reason, r.data) for r in db.exec(select(VisitRow))},
            "timers": {r.timer_id: (r.state, r.due_at) for r in db.exec(select(TimerRow))},
            "penalties": sorted((p.violation_id, p.kind, p.state, p.amount, p.ended_at)
                                for p in db.exec(select(Penalty))),
        }


def test_a_batch_stores_what_the_same_events_store_one_by_one(tmp_path, db_url):
    one = service(f"sqlite:///{tmp_path / 'one.db'}", 2)
    for e, now in feed():
        one.handle(e, now)
    many = service(db_url, 2)
    events = feed()
    for k in range(0, len(events), 7):  # batches that cut visits in the middle
        many.handle_many(events[k : k + 7])
    want, got = snapshot(one), snapshot(many)
    assert want["penalties"], "the feed must raise penalties to compare"
    # Timer rows mirror the pending timers for the sweep; one armed and cancelled inside a batch never
    # needs a row, so only the pending ones must agree (and every row the batch wrote is one of them).
    pending = {k: v for k, v in want.pop("timers").items() if v[0] == "pending"}
    assert pending, "the feed must end with a visit that has timers"
    timers = got.pop("timers")
    assert {k: v for k, v in timers.items() if v[0] == "pending"} == pending
    assert set(timers) <= set(snapshot(one)["timers"])
    assert got == want


def test_a_batch_of_arrivals_costs_a_few_statements_not_a_few_per_event(tmp_path, db_url):
    svc = service(db_url, 60)
    svc.handle_many([(e, T0) for e in [visit(i, T0, f"AB{i:03d}CD")[0] for i in range(2)]])  # warm caches
    statements: list[str] = []
    event.listen(svc.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    arrivals = [(visit(i, T0, f"AB{i:03d}CD")[0], T0) for i in range(10, 60)]
    svc.handle_many(arrivals)
    with Session(svc.engine) as db:
        assert len(list(db.exec(select(VisitRow)))) == 52
    # Lock 50 bay states, lists, visits, timers; the writes go out as multi-row statements.
    assert len(statements) <= 12, statements


def test_a_batch_without_violations_reads_no_penalties(tmp_path, db_url):
    """Most batches are cars coming and going with no penalty: only a visit that raised a violation can
    have penalty rows, so theirs are not looked for (it was a query per transaction)."""
    svc = service(db_url, 20)
    svc.handle_many([(visit(i, T0, f"AB{i:03d}CD")[0], T0) for i in range(20)])
    statements: list[str] = []
    event.listen(svc.engine, "before_cursor_execute", lambda *a: statements.append(str(a[2])))
    t = T0 + timedelta(minutes=5)  # they leave after five minutes: nothing owed
    svc.handle_many([(VehicleDeparted(at=t, presence_id=f"p{i}-{T0:%H%M}", camera="cam", bay_id=f"B{i}",
                                      plate=f"AB{i:03d}CD", first_seen=T0, last_seen=t), t) for i in range(20)])
    with Session(svc.engine) as db:
        assert all(v.departed_at for v in db.exec(select(VisitRow))) and not list(db.exec(select(Penalty)))
    # (the return bans' read of recently ended penalties stays: one per batch)
    assert not [s for s in statements if "penalties.visit_id IN" in s], statements
    assert len(statements) <= 8, statements


def test_a_batch_of_departures_finalises_their_penalties_in_a_few_statements(tmp_path, db_url):
    svc = service(db_url, 50)
    stays = [visit(i, T0, f"AB{i:03d}CD") for i in range(50)]
    svc.handle_many([(e, e.at + timedelta(seconds=1)) for stay in stays for e in stay[:4]])
    svc.sweep(now=T0 + timedelta(minutes=60, seconds=30))  # the idle fees' timers fire
    with Session(svc.engine) as db:
        assert [p.state for p in db.exec(select(Penalty))] == ["violation"] * 50
    statements: list[str] = []

    def count(*a: object) -> None:
        statements.append(str(a[2]))

    event.listen(svc.engine, "before_cursor_execute", count)
    svc.handle_many([(stay[4], stay[4].at + timedelta(seconds=1)) for stay in stays])
    event.remove(svc.engine, "before_cursor_execute", count)
    with Session(svc.engine) as db:
        penalties = list(db.exec(select(Penalty)))
    assert len(penalties) == 50 and all(p.state == "pending_review" and p.ended_at for p in penalties)
    # Not a SELECT (and an UPDATE) per departure: the visits' penalties are read with their bays.
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "penalties" in s]
    assert len(reads) <= 2, reads
    assert len(statements) <= 20, statements
