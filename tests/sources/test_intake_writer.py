"""The group-commit writer of outside reads: requests that come together share a transaction, a failed
batch is stored again job by job, and a bay's reads stay in order."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

import service.intake as intake
from models.db import make_engine, upgrade
from models.tables import Presence, SourceCounter, SourcePresence, StoredEvent
from service.context import AppContext
from service.sources import prepare_reads
from sources.reads import OutsideRead
from tests.foundation.helpers import make_settings

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def ctx(tmp_path, db_url):
    settings = make_settings(tmp_path, db_url, sources=[
        {"name": "pr", "kind": "platerecognizer", "secret": "s" * 20,
         "cameras": [{"id": f"c{i}", "bay_id": f"B{i}"} for i in range(4)]}])
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    yield AppContext(settings=settings, engine=engine, clock=lambda: T0)
    engine.dispose()


def read(i: int, plate: str, minute: int) -> OutsideRead:
    return OutsideRead(camera_id=f"c{i}", plate=plate, confidence=0.9, at=T0 + timedelta(minutes=minute),
                       message_id=f"m-{i}-{plate}-{minute}")


def submit_all(ctx, jobs):
    source = ctx.settings.sources[0]
    writer = ctx.intake()
    futures = [writer.submit(source, prepare_reads(source, reads, ctx.settings.evidence_dir), T0) for reads in jobs]
    return [f.result(timeout=30) for f in futures]


def test_reads_that_wait_together_are_stored_in_one_transaction_and_in_order(ctx, monkeypatch):
    release = threading.Event()
    real = intake.store_batch
    calls: list[int] = []

    def first_waits(db, jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            release.wait(10)  # the other requests arrive meanwhile and queue up
        return real(db, jobs)

    monkeypatch.setattr(intake, "store_batch", first_waits)
    # Bay B0: car AB1 arrives, then XY2 replaces it; the reads of B1..B3 come in between.
    jobs = [[read(0, "AB1", 0)]] + [[read(i, f"CD{i}", 1)] for i in range(1, 4)] + [[read(0, "XY2", 5)]]
    source = ctx.settings.sources[0]
    writer = ctx.intake()
    futures = [writer.submit(source, prepare_reads(source, jobs[0], ctx.settings.evidence_dir), T0)]
    while not calls:
        threading.Event().wait(0.01)
    futures += [writer.submit(source, prepare_reads(source, j, ctx.settings.evidence_dir), T0) for j in jobs[1:]]
    release.set()
    results = [f.result(timeout=30) for f in futures]
    assert calls == [1, 4]  # the four that waited went in one transaction
    assert writer.batches == 2
    assert [[e.event.kind for e in r if e.event.kind != "plate_read"] for r in results] == [
        ["vehicle_arrived"], ["vehicle_arrived"], ["vehicle_arrived"], ["vehicle_arrived"],
        ["vehicle_departed", "vehicle_arrived"]]
    with Session(ctx.engine) as db:
        (counter,) = db.exec(select(SourceCounter)).all()
        assert counter.accepted == 5
        held = {p.bay_id: p.plate for p in db.exec(select(SourcePresence))}
        assert held == {"B0": "XY2", "B1": "CD1", "B2": "CD2", "B3": "CD3"}
        arrived = next(e.event for e in results[0] if e.event.kind == "vehicle_arrived")
        first = db.get(Presence, arrived.presence_id)
        assert first is not None and first.departed_at is not None  # AB1 left when XY2 came
        assert len(db.exec(select(StoredEvent)).all()) == sum(len(r) for r in results) == 11


def test_a_batch_that_fails_is_stored_job_by_job(ctx, monkeypatch):
    def conflict(db, jobs):
        raise IntegrityError("INSERT", {}, Exception("duplicate key (another instance stored it)"))

    monkeypatch.setattr(intake, "store_batch", conflict)
    results = submit_all(ctx, [[read(1, "AB1", 0)], [read(2, "CD2", 0)]])
    assert [len(r) for r in results] == [2, 2]  # each a plate read and an arrival
    with Session(ctx.engine) as db:
        assert len(db.exec(select(StoredEvent)).all()) == 4
        assert db.exec(select(SourceCounter)).one().accepted == 2


def test_a_replayed_read_stores_nothing_twice(ctx):
    one = read(1, "AB1", 0)
    first, again, both = submit_all(ctx, [[one], [one], [one, read(1, "AB1", 2)]])
    assert len(first) == 2 and again == []
    assert [e.event.kind for e in both] == ["plate_read", "vehicle_still_present"]
    with Session(ctx.engine) as db:
        assert len(db.exec(select(StoredEvent)).all()) == 4


def test_the_sweep_departs_unplugged_and_silent_cars_and_leaves_the_others(ctx):
    from models.settings import BaySettings
    from models.tables import Transaction
    from service.sources import sweep_presences

    bays = {f"B{i}": BaySettings(bay_id=f"B{i}", charge_point_id=f"CP{i}", connector_id=1) for i in range(4)}
    submit_all(ctx, [[read(i, f"AB{i}", 0)] for i in range(3)])
    with Session(ctx.engine) as db:
        for cp, conn, minute in (("CP1", 1, 2), ("CP2", 2, 2), ("CP0", 1, -5)):
            db.add(Transaction(charge_point_id=cp, transaction_id=f"T{cp}", connector_id=conn, started_at=T0,
                               ended_at=T0 + timedelta(minutes=minute), updated_at=T0))
        db.commit()
    source = ctx.settings.sources[0]
    # At +3 min only B1's cable is out: CP2's ended session was on another connector, CP0's before the car.
    first = sweep_presences(ctx.engine, ctx.settings.sources, bays, T0 + timedelta(minutes=3))
    assert [(e.event.bay_id, e.event.at) for e in first] == [("B1", T0 + timedelta(minutes=2))]
    later = T0 + timedelta(seconds=source.presence_timeout_s + 60)
    silent = sweep_presences(ctx.engine, ctx.settings.sources, bays, later)
    assert sorted(e.event.bay_id for e in silent) == ["B0", "B2"]  # silent past the source's timeout
    assert all(e.event.kind == "vehicle_departed" for e in first + silent)
    assert sweep_presences(ctx.engine, ctx.settings.sources, bays, later) == []
    with Session(ctx.engine) as db:
        assert db.exec(select(SourcePresence)).all() == []


def test_a_batch_is_one_insert_and_keeps_each_requests_receipt_time(ctx, monkeypatch):
    """Requests batched together each arrived at their own time: their events are written by one
    multi-row insert (it used to be one insert per request, since every request's time differs) and
    each keeps its own `received_at`."""
    import models.eventstore as eventstore
    import service.sources as sources

    source = ctx.settings.sources[0]
    calls: list[int] = []
    real = eventstore.ingest_batch

    def counted(db, items, **kw):
        calls.append(len(items))
        return real(db, items, **kw)

    monkeypatch.setattr(sources, "ingest_batch", counted)
    jobs = [(source, prepare_reads(source, [read(i, f"RT{i}", 0)], ctx.settings.evidence_dir),
             T0 + timedelta(seconds=i)) for i in range(4)]
    with Session(ctx.engine) as db:
        sources.store_batch(db, jobs)
        db.commit()
    assert calls == [8]  # 4 requests x (plate_read + vehicle_arrived), one call
    with Session(ctx.engine) as db:
        rows = list(db.exec(select(StoredEvent).order_by(StoredEvent.seq)))
    got = {r.payload["plate"]: r.received_at.replace(tzinfo=UTC) for r in rows if r.kind == "vehicle_arrived"}
    assert got == {f"RT{i}": T0 + timedelta(seconds=i) for i in range(4)}
