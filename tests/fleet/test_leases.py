"""Leases with fencing on a real PostgreSQL, and the sharded engine's exactly-once hand-over."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from models.db import make_engine, upgrade
from models.leases import LeaseLost, PgLeases, SoloLeases, shard_of
from models.tables import ConsumerCursor, Penalty, StoredEvent, VisitRow
from service.enforcement_control import EnforcementComponent, lease_name
from service.fleet import first_difference, shared_settings
from tests.foundation.helpers import EDGE_TOKEN, Role, add_user, client_for, login, make_settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url):
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def test_shard_of_is_stable_and_spreads():
    assert shard_of("anything", 1) == 0
    assert shard_of("north", 8) == shard_of("north", 8)  # crc32: the same in every process
    assert len({shard_of(f"site-{i}", 8) for i in range(200)}) == 8


def test_a_lease_has_one_owner_and_moves_only_after_it_expired(pg):
    a, b = PgLeases(pg, "a", ttl_s=1.0), PgLeases(pg, "b", ttl_s=1.0)
    ta = a.acquire("engine.0")
    assert ta is not None and b.acquire("engine.0") is None
    assert a.acquire("engine.0") == ta  # renewal keeps the token
    time.sleep(1.2)  # a stops renewing (killed, hung, cut off)
    assert a.holds("engine.0") is None  # its own deadline passed too
    tb = b.acquire("engine.0")
    assert tb == ta + 1
    # The old owner's late work is fenced: its transaction cannot commit.
    with Session(pg) as db, pytest.raises(LeaseLost):
        a.fence(db, "engine.0", ta)
    with Session(pg) as db:
        b.fence(db, "engine.0", tb)  # the new owner's passes


def test_release_hands_over_at_once_and_a_fenced_commit_blocks_the_takeover(pg):
    a, b = PgLeases(pg, "a", ttl_s=30.0), PgLeases(pg, "b", ttl_s=30.0)
    ta = a.acquire("job.retention")
    assert ta is not None
    a.release("job.retention")
    tb = b.acquire("job.retention")
    assert tb == ta + 1 and a.holds("job.retention") is None
    # While b's transaction holds its fence (FOR SHARE), a rival's takeover waits for the commit.
    b.release("job.retention")
    tb = b.acquire("job.retention")
    took: list[int | None] = []
    with Session(pg) as db:
        b.fence(db, "job.retention", tb)
        with pg.begin() as conn:  # expire it behind b's back, as if b hung past its lifetime
            conn.exec_driver_sql("SET lock_timeout = '200ms'")
            with pytest.raises(Exception, match="lock"):
                conn.exec_driver_sql("UPDATE leases SET expires_at = now() WHERE name = 'job.retention'")
        t = threading.Thread(target=lambda: took.append(a.acquire("job.retention")))
        t.start()
        time.sleep(0.3)
        assert took == []  # waiting for b's transaction
        db.commit()
    t.join(5)
    assert took == [None]  # b's lease was still valid: a did not get it


def test_solo_leases_hold_everything():
    s = SoloLeases()
    assert s.acquire("engine.3") == 1 and s.holds("x") == 1


def test_first_difference_names_the_setting():
    assert first_difference({"a": 1, "b": [1, {"c": 2}]}, {"a": 1, "b": [1, {"c": 3}]}) == "b[1].c"
    assert first_difference({"a": [1]}, {"a": [1, 2]}) == "a (length 1 here, 2 there)"
    assert first_difference({"a": 1}, {"a": 1}) is None


def _engine_env(tmp_path, url, clock, name):
    settings = make_settings(
        tmp_path / name, url,
        components={"api": True, "scheduler": False, "cameras": False, "relay": False, "enforcement": False},
        ha={"shards": 2, "takeover_s": 2},
        enforcement={"rules": {"idle_grace_min": 10, "idle_fee_per_min": "0.40", "idle_fee_cap": "20.00"},
                     "bays": [{"bay_id": "N1", "site": "north", "charge_point_id": "CPN", "connector_id": 1},
                              {"bay_id": "S1", "site": "mall", "charge_point_id": "CPS", "connector_id": 1}]},
    )
    return settings


def ev(eid, kind, at, **kw):
    return {"event_id": f"event-{eid}", "event": {"kind": kind, "at": at.isoformat(), **kw}}


def chain(prefix: str, cp: str, bay: str, plate: str, t0):
    tx = {"charge_point_id": cp, "transaction_id": f"T-{prefix}", "connector_id": 1}
    return [
        ev(f"{prefix}-a", "vehicle_arrived", t0, presence_id=f"p-{prefix}", camera="gate", bay_id=bay, plate=plate,
           confidence=0.995),
        ev(f"{prefix}-s", "transaction_started", t0 + timedelta(minutes=1), **tx),
        ev(f"{prefix}-i", "charging_idle", t0 + timedelta(minutes=20), reason="SuspendedEV", **tx),
        ev(f"{prefix}-e", "transaction_ended", t0 + timedelta(minutes=50), reason="EVDisconnected", **tx),
        ev(f"{prefix}-d", "vehicle_departed", t0 + timedelta(minutes=51), presence_id=f"p-{prefix}", camera="gate",
           bay_id=bay, plate=plate, first_seen=t0.isoformat(), last_seen=(t0 + timedelta(minutes=50)).isoformat()),
    ]


def test_two_engines_share_the_shards_and_a_takeover_applies_nothing_twice(tmp_path, postgres_url, clock):
    assert shard_of("north", 2) != shard_of("mall", 2)
    settings = _engine_env(tmp_path, postgres_url, clock, "one")
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    with client:
        csrf = login(client, "root")
        token = client.post("/api/v1/tokens", json=EDGE_TOKEN, headers={"X-CSRF-Token": csrf}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        ctx = client.app.state.ctx
        ctx.leases = PgLeases(ctx.engine, "instance-a", ttl_s=30.0)
        a = EnforcementComponent(ctx, notify=ctx.notify)
        a.service = a._build()
        b_ctx_leases = PgLeases(ctx.engine, "instance-b", ttl_s=30.0)
        b = EnforcementComponent(ctx, notify=ctx.notify)
        b.leases = b_ctx_leases
        b.service = b._build(sync=False)
        north, south = shard_of("north", 2), shard_of("mall", 2)
        t0 = clock() - timedelta(hours=2)
        north_events = chain("n", "CPN", "N1", "NORTH1", t0)
        south_events = chain("s", "CPS", "S1", "SOUTH1", t0)
        assert client.post("/api/v1/events", json={"events": north_events[:3] + south_events[:3]},
                           headers=auth).status_code == 200
        # a leads north, b leads south; each applies only its own site's events.
        ta = a.leases.acquire(lease_name(north))
        tb = b.leases.acquire(lease_name(south))
        assert a.leases.acquire(lease_name(south)) is None and b.leases.acquire(lease_name(north)) is None
        a._drain_shard(north, ta)
        b._drain_shard(south, tb)
        a._sweep_shard(north, ta)
        b._sweep_shard(south, tb)
        assert client.post("/api/v1/events", json={"events": north_events[3:] + south_events[3:]},
                           headers=auth).status_code == 200
        # The wake-up each instance's NOTIFY listener passes on (the components are driven by hand here):
        # without it an index read less than MIN_AGE_S ago is taken as current, and a's late attempt
        # found nothing new to apply, so no fenced write (flaky on a fast machine).
        a.inbox.wake()
        b.inbox.wake()
        # a hangs past its lease (its expiry passes: set here, so a loaded machine cannot make it pass
        # earlier); b takes north over. a's late attempt is fenced and stores nothing.
        with ctx.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE leases SET expires_at = clock_timestamp() - interval '1 second' "
                                 f"WHERE name = '{lease_name(north)}'")
        tb_north = b.leases.acquire(lease_name(north))
        assert tb_north is not None
        with pytest.raises(LeaseLost):
            a._drain_shard(north, ta)
        b._drain_shard(north, tb_north)
        tb_south = b.leases.acquire(lease_name(south))
        b._drain_shard(south, tb_south)
        b._sweep_shard(north, tb_north)
        b._sweep_shard(south, tb_south)
        b._drain_shard(north, tb_north)  # again: nothing is applied twice
        with Session(ctx.engine) as db:
            penalties = sorted((p.plate, p.amount) for p in db.exec(select(Penalty)))
            visits = list(db.exec(select(VisitRow)))
            head = max(db.exec(select(StoredEvent.seq)))
            cursors = {c.name: c.seq for c in db.exec(select(ConsumerCursor))}
    # 30 idle minutes, 10 of grace, 0.40 a minute: 8.00 each, once.
    assert penalties == [("NORTH1", "8.00"), ("SOUTH1", "8.00")]
    assert len(visits) == 2
    assert set(cursors.values()) == {head}


def test_instances_configured_differently_are_named(tmp_path, postgres_url):
    from models.base import utcnow
    from models.tables import FleetInstance
    from service.fleet import check_fleet_agrees

    upgrade(postgres_url)
    one = _engine_env(tmp_path, postgres_url, None, "one")
    two = one.model_copy(update={"ha": one.ha.model_copy(update={"shards": 4})})
    engine = make_engine(postgres_url)
    with Session(engine) as db:
        db.add(FleetInstance(id="other:1:x", node="other", pid=1, roles=["enforcement"], started_at=utcnow(),
                             heartbeat_at=utcnow(), shared_settings=shared_settings(one)))
        db.commit()
    assert check_fleet_agrees(engine, one, 5.0) is None
    problem = check_fleet_agrees(engine, two, 5.0)
    engine.dispose()
    assert problem is not None and "ha.shards" in problem and "other:1:x" in problem


def test_instances_starting_together_sync_the_config_bays_without_a_conflict(tmp_path, postgres_url, caplog):
    """Several instances started at once each mirrored the file's bays: all read "no bays yet", all
    inserted, all but one failed on the primary key (found by `bench/ingest.py --intakes 2`)."""
    import logging

    from models.db import make_engine as _make_engine
    from models.tables import BayRow, Camera
    from service.build import sync_config
    from service.context import AppContext

    upgrade(postgres_url)
    bays = [{"bay_id": f"B{i}", "charge_point_id": f"CP{i}", "connector_id": 1} for i in range(1500)]
    cameras = [{"name": f"cam{i}", "url": f"rtsp://127.0.0.1:1/{i}"} for i in range(50)]
    settings = make_settings(tmp_path, postgres_url, enforcement={"bays": bays}, cameras=cameras)
    contexts = [AppContext(settings=settings, engine=_make_engine(postgres_url)) for _ in range(4)]
    start = threading.Barrier(len(contexts))

    def run(ctx):
        start.wait()
        sync_config(ctx)

    threads = [threading.Thread(target=run, args=(ctx,)) for ctx in contexts]
    with caplog.at_level(logging.WARNING, logger="service.build"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for ctx in contexts:
        ctx.engine.dispose()
    assert not [r for r in caplog.records if "not synced" in r.getMessage()], caplog.text[:500]
    engine = make_engine(postgres_url)
    with Session(engine) as db:
        assert len(list(db.exec(select(BayRow)))) == 1500 and len(list(db.exec(select(Camera)))) == 50
    engine.dispose()


def test_an_engine_applies_another_instances_events_at_once_not_at_its_next_poll(tmp_path, postgres_url, clock):
    """An intake-only instance stores a read; the engine instance (here polling every 30 s) is woken by
    PostgreSQL NOTIFY at the commit and applies it within a second."""
    import asyncio

    from models.events import EventEnvelope
    from models.eventstore import ingest
    from models.tables import BayStateRow
    from service.build import build_context

    upgrade(postgres_url)
    settings = _engine_env(tmp_path, postgres_url, clock, "notify")
    ctx = build_context(settings, components=[])
    ctx.leases = PgLeases(ctx.engine, "instance-n", ttl_s=60.0)  # held through the test, no keeper needed
    engine_part = EnforcementComponent(ctx, poll_s=30.0)
    other = make_engine(postgres_url)  # the intake instance's own connection pool

    def bay_state():
        with Session(other) as db:
            row = db.get(BayStateRow, "N1")
            return (row.state or {}).get("visit") if row else None

    async def main():
        for k in range(2):
            assert ctx.leases.acquire(lease_name(k)) is not None
        await engine_part.start()
        try:
            await asyncio.sleep(1.5)  # the shards are now waiting out their 30 s poll
            env = EventEnvelope.model_validate(ev("wake-a", "vehicle_arrived", clock(), presence_id="p-w",
                                                  camera="gate", bay_id="N1", plate="WAKE1", confidence=0.99))
            with Session(other) as db:
                assert ingest(db, env, source="source:test", now=clock())
                db.commit()
            deadline = time.monotonic() + 5
            while bay_state() is None:
                assert time.monotonic() < deadline, "the engine did not wake for the committed event"
                await asyncio.sleep(0.05)
        finally:
            await engine_part.stop()

    asyncio.run(main())
    other.dispose()
    ctx.engine.dispose()
