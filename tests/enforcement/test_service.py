"""The enforcement engine on the real app and database: events in through the public intakes, one
transaction per event, durable timers, penalties and alerts out; restarts neither lose nor double."""

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from models.db import make_engine
from models.tables import Alert, ListEntry, Penalty, Role, TimerRow, VisitRow
from service.enforcement_control import EnforcementComponent
from tests.foundation.helpers import EDGE_TOKEN, add_user, client_for, login, make_settings

RULES = {"idle_grace_min": 10, "idle_fee_per_min": "0.50", "idle_fee_cap": "30.00", "currency": "EUR",
         "confirmation_threshold": 0.8}


def _env(tmp_path, db_url, clock, rules):
    """Two bays on one charger and one camera, the API, and an engine the test drains by hand."""
    settings = make_settings(
        tmp_path, db_url,
        components={"api": True, "scheduler": False, "cameras": False, "relay": False, "enforcement": False},
        cameras=[{"name": "gate", "url": "rtsp://127.0.0.1:1/x", "zones": [
            {"bay_id": "B1", "polygon": [[0, 0], [10, 0], [10, 10]]},
            {"bay_id": "B2", "polygon": [[20, 0], [30, 0], [30, 10]]}]}],
        enforcement={"rules": rules, "bays": [
            {"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1},
            {"bay_id": "B2", "charge_point_id": "CP1", "connector_id": 2}]},
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    with client:
        csrf = login(client, "root")
        token = client.post("/api/v1/tokens", json=EDGE_TOKEN, headers={"X-CSRF-Token": csrf}).json()["token"]
        comp = EnforcementComponent(client.app.state.ctx)
        comp.service = comp._build()
        yield settings, client, clock, comp, {"Authorization": f"Bearer {token}"}, csrf


@pytest.fixture
def env(tmp_path, db_url, clock):
    yield from _env(tmp_path, db_url, clock, RULES)


def post(client, auth, *events):
    r = client.post("/api/v1/events", json={"events": list(events)}, headers=auth)
    assert r.status_code == 200, r.text


def ev(eid, kind, at, **kw):
    return {"event_id": f"event-{eid}", "event": {"kind": kind, "at": at.isoformat(), **kw}}


def rows(settings, model):
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        out = list(db.exec(select(model)))
    engine.dispose()
    return out


def arrive(i, at, plate, bay="B1", conf=0.95):
    return ev(f"arr-{i}", "vehicle_arrived", at, presence_id=f"p{i}", camera="gate", bay_id=bay, plate=plate,
              confidence=conf)


def depart(i, first, last, plate, bay="B1"):
    return ev(f"dep-{i}", "vehicle_departed", last + timedelta(seconds=30), presence_id=f"p{i}", camera="gate",
              bay_id=bay, plate=plate, first_seen=first.isoformat(), last_seen=last.isoformat())


def charger(i, kind, at, **kw):
    return ev(f"cp-{i}", kind, at, charge_point_id="CP1", transaction_id="T1", connector_id=1, **kw)


def test_idle_car_gets_one_penalty_with_true_times(env):
    settings, client, clock, comp, auth, _ = env
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD"), charger(1, "transaction_started", t0 + timedelta(minutes=1)),
         charger(2, "transaction_updated", t0 + timedelta(minutes=2), charging_state="Charging"),
         charger(3, "charging_idle", t0 + timedelta(minutes=30), reason="SuspendedEV"))
    clock.advance(minutes=30)
    comp.drain()
    (visit,) = rows(settings, VisitRow)
    assert visit.plate == "AB123CD" and visit.transaction_id == "T1" and visit.departed_at is None
    (timer,) = [t for t in rows(settings, TimerRow) if t.state == "pending" and t.kind == "idle"]
    assert timer.due_at == t0 + timedelta(minutes=40)
    # The service is down when the grace ends; at restart the sweep raises it at its TRUE time.
    clock.advance(minutes=25)
    again = EnforcementComponent(client.app.state.ctx)
    again.service = again._build()
    assert again.drain() is False  # the cursor survived: nothing applied twice
    assert again.service.sweep() == 1
    (penalty,) = rows(settings, Penalty)
    assert penalty.state == "violation" and penalty.started_at == t0 + timedelta(minutes=40)
    assert again.service.sweep() == 0  # nothing due twice
    post(client, auth, depart(1, t0, t0 + timedelta(minutes=70), "AB123CD"))
    clock.advance(minutes=20)
    again.drain()
    (penalty,) = rows(settings, Penalty)
    assert penalty.state == "notice_issued"
    assert penalty.minutes == 30 and penalty.amount == "15.00" and penalty.currency == "EUR"
    assert penalty.ended_at == t0 + timedelta(minutes=70)
    (visit,) = rows(settings, VisitRow)
    assert visit.departed_at == t0 + timedelta(minutes=70)
    assert len(visit.data["timeline"]) >= 4  # arrival, plug-in, idle, departure at least
    # Replaying every event changes nothing.
    from models.tables import ConsumerCursor

    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.get(ConsumerCursor, "enforcement").seq = 0
        db.commit()
    engine.dispose()
    again.drain()
    assert len(rows(settings, Penalty)) == 1 and rows(settings, Penalty)[0].amount == "15.00"


def test_whitelisted_car_never_penalised_blacklisted_alerts(env):
    settings, client, clock, comp, auth, csrf = env
    t0 = clock()
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.add(ListEntry(list="white", plate="WH1TE1", owner="Fleet", reason="staff", created_at=t0))
        db.add(ListEntry(list="black", plate="BL4CK1", reason="stolen", priority=9, created_at=t0))
        db.commit()
    engine.dispose()
    post(client, auth, arrive(1, t0, "WH1TE1"), charger(1, "transaction_started", t0),
         charger(3, "charging_idle", t0 + timedelta(minutes=5), reason="SuspendedEV"),
         arrive(2, t0, "BL4CE1", bay="B2"))  # one character off the blacklisted plate
    clock.advance(hours=3)
    comp.drain()
    comp.service.sweep()
    post(client, auth, depart(1, t0, t0 + timedelta(hours=2), "WH1TE1"))
    comp.drain()
    assert [p.plate for p in rows(settings, Penalty)] == ["BL4CE1"]  # parked without charging; B1's car exempt
    (alert,) = [a for a in rows(settings, Alert) if a.kind == "blacklist"]
    assert alert.severity == "critical" and "BL4C" in alert.title


def test_list_changes_reach_the_engine_between_batches(env):
    # The engine reads the lists again only when their version moved (a trigger bumps it on any
    # write): a blacklist entry added, edited or removed by plain SQL is seen by the next batch.
    from sqlalchemy import text

    settings, client, clock, comp, auth, csrf = env
    t0 = clock()
    engine = make_engine(settings.db_url)

    def sql(statement):
        with engine.begin() as conn:
            conn.execute(text(statement))

    def blacklist_alerts():
        return [a for a in rows(settings, Alert) if a.kind == "blacklist"]

    post(client, auth, arrive(1, t0, "ST0LEN1"))
    comp.drain()
    loaded = comp.service.lists_loaded
    assert blacklist_alerts() == []
    post(client, auth, depart(1, t0, t0 + timedelta(minutes=1), "ST0LEN1"), arrive(2, t0, "OTHER22", bay="B2"))
    comp.drain()
    assert comp.service.lists_loaded == loaded  # nothing changed: no second read of the lists
    sql("INSERT INTO list_entries (list, plate, owner, reason, priority, created_by, created_at) "
        "VALUES ('black', 'ST0LEN1', '', 'stolen', 9, '', '2026-01-01 00:00:00+00:00')")
    post(client, auth, arrive(3, t0 + timedelta(minutes=2), "ST0LEN1"))
    comp.drain()
    assert [a.title for a in blacklist_alerts()] and comp.service.lists_loaded == loaded + 1
    sql("UPDATE list_entries SET plate = 'OTHER22'")
    post(client, auth, depart(3, t0, t0 + timedelta(minutes=3), "ST0LEN1"),
         depart(2, t0, t0 + timedelta(minutes=3), "OTHER22", bay="B2"),
         arrive(4, t0 + timedelta(minutes=4), "ST0LEN1"), arrive(5, t0 + timedelta(minutes=4), "OTHER22", bay="B2"))
    comp.drain()
    alerts = blacklist_alerts()
    assert len(alerts) == 2 and "OTHER22" in alerts[-1].title + alerts[-1].detail
    sql("DELETE FROM list_entries")
    post(client, auth, depart(5, t0, t0 + timedelta(minutes=5), "OTHER22", bay="B2"),
         arrive(6, t0 + timedelta(minutes=6), "OTHER22", bay="B2"))
    comp.drain()
    assert len(blacklist_alerts()) == 2
    engine.dispose()


def test_low_confidence_read_goes_to_review(env):
    settings, client, clock, comp, auth, _ = env
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD", conf=0.5), charger(1, "transaction_started", t0),
         charger(2, "charging_idle", t0 + timedelta(minutes=1), reason="SuspendedEV"),
         depart(1, t0, t0 + timedelta(minutes=41), "AB123CD"))
    clock.advance(hours=1)
    comp.drain()
    (penalty,) = rows(settings, Penalty)
    assert penalty.state == "pending_review" and penalty.needs_review
    assert penalty.amount == "15.00"


def test_unknown_bay_raises_one_alert(env):
    settings, client, clock, comp, auth, _ = env
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD", bay="B9"),
         arrive(2, t0 + timedelta(minutes=1), "AB123CE", bay="B9"))
    comp.drain()
    assert [a.kind for a in rows(settings, Alert)] == ["unknown_bay"]


def test_a_bay_removed_with_a_car_in_it_is_one_alert_and_the_engine_goes_on(env):
    """Issue 18 row 3: a bay no longer configured while its visit is open used to log KeyError every
    sweep, forever. Now: one operator alert, the visit kept, the other bays applied as before."""
    from models.tables import Alert, BayStateRow

    settings, client, clock, comp, auth, _ = env
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD"), ev("tx1", "transaction_started", t0 + timedelta(minutes=1),
                                                     charge_point_id="CP1", transaction_id="T1", connector_id=1),
         ev("idle1", "charging_idle", t0 + timedelta(minutes=5), charge_point_id="CP1", transaction_id="T1",
            connector_id=1, reason="SuspendedEV"))
    comp.drain()
    ctx = client.app.state.ctx
    without_b1 = settings.enforcement.model_copy(update={"bays": [b for b in settings.enforcement.bays
                                                                  if b.bay_id != "B1"]})
    ctx.settings = settings.model_copy(update={"enforcement": without_b1})
    from enforcement.config import sync_config_bays
    from models.db import make_engine as _engine

    eng = _engine(settings.db_url)
    with Session(eng) as db:
        sync_config_bays(db, without_b1, clock())
    eng.dispose()
    comp.service = comp._build(sync=False)
    comp.service = comp._build(sync=False)  # a reload: still one alert
    clock.advance(hours=2)
    comp.service.sweep(only=comp.shard_bays[0])  # B1's timers wait; nothing raises
    post(client, auth, arrive(2, clock(), "XY999ZZ", bay="B2"))
    comp.drain()
    alerts = [a for a in rows(settings, Alert) if a.kind == "bay_removed"]
    assert len(alerts) == 1 and alerts[0].subject == "B1" and "AB123CD" in alerts[0].title
    states = {r.bay_id: r.state for r in rows(settings, BayStateRow)}
    assert states["B1"]["visit"]["plate"] == "AB123CD"  # kept
    assert states["B2"]["visit"]["plate"] == "XY999ZZ"  # the engine goes on


def test_a_reused_transaction_id_starts_a_new_transaction_and_never_rewrites_the_finished_one(env):
    """Issue 18 row 2: a CSMS that restarts its counter (or a charger after a factory reset) gives a new
    session an id already used; the new visit links it, and the finished transaction keeps its times."""
    from models.tables import Transaction, VisitRow

    settings, client, clock, comp, auth, _ = env
    t0 = clock()
    tx = {"charge_point_id": "CP1", "transaction_id": "1004", "connector_id": 1}
    post(client, auth, arrive(1, t0, "AB123CD"), ev("s1", "transaction_started", t0 + timedelta(minutes=1), **tx),
         ev("e1", "transaction_ended", t0 + timedelta(minutes=30), reason="EVDisconnected", **tx),
         ev("d1", "vehicle_departed", t0 + timedelta(minutes=31), presence_id="p1", camera="gate", bay_id="B1",
            plate="AB123CD", first_seen=t0.isoformat(), last_seen=(t0 + timedelta(minutes=31)).isoformat()))
    clock.advance(hours=2)
    t1 = clock()
    post(client, auth, arrive(2, t1, "XY999ZZ"), ev("s2", "transaction_started", t1 + timedelta(minutes=1), **tx),
         ev("s1-again", "transaction_started", t0 + timedelta(minutes=1), **tx))  # a late duplicate of run 1
    comp.drain()
    clock.advance(minutes=30)  # the engine clamps events to its clock: let the unplug be in the past
    post(client, auth, ev("e2", "transaction_ended", t1 + timedelta(minutes=20), reason="EVDisconnected", **tx))
    comp.drain()
    txs = sorted((r.transaction_id, r.started_at, r.ended_at) for r in rows(settings, Transaction))
    assert len(txs) == 2
    first = next(r for r in txs if r[0] != "1004")
    assert first[0].startswith("1004@") and first[1] == t0 + timedelta(minutes=1)
    assert first[2] == t0 + timedelta(minutes=30)  # run 1's end did not move
    second = next(r for r in txs if r[0] == "1004")
    assert second[1] == t1 + timedelta(minutes=1) and second[2] == t1 + timedelta(minutes=20)
    visits = {v.plate: v.data for v in rows(settings, VisitRow)}
    assert visits["XY999ZZ"]["tx"]["transaction_id"] == "1004"  # the new visit has its session
    assert visits["AB123CD"]["tx"]["transaction_id"] == "1004"
    from models.tables import BayStateRow

    (state,) = [r.state for r in rows(settings, BayStateRow) if r.bay_id == "B1"]
    assert state["tx"] is None or state["tx"]["started_at"].startswith(t1.date().isoformat())
    # The engine followed the second run to its own end (the late start of run 1 did not rewind it).
    from datetime import datetime as _dt

    assert _dt.fromisoformat(state["closed_tx_ends"]["CP1/1004"]) == t1 + timedelta(minutes=20)


def test_a_bad_event_in_a_batch_is_skipped_alone_and_the_others_apply_once(env, monkeypatch):
    # The shard applies its backlog 50 events per transaction; one event that cannot be applied rolls
    # its batch back, then the batch is applied one by one so only that event is skipped.
    settings, client, clock, comp, auth, _ = env
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD"), arrive(2, t0, "BADREAD", bay="B2"),
         depart(1, t0, t0 + timedelta(minutes=5), "AB123CD"), arrive(3, t0 + timedelta(minutes=6), "XY987ZZ"))
    real = comp.service._decide_one

    def fails_on_bad(db, bay_id, event, now):
        if getattr(event, "plate", None) == "BADREAD":
            raise ValueError("a bug in a rule")
        return real(db, bay_id, event, now)

    monkeypatch.setattr(comp.service, "_decide_one", fails_on_bad)
    clock.advance(minutes=10)
    assert comp.drain() is False
    visits = sorted((v.plate, v.departed_at is not None) for v in rows(settings, VisitRow))
    assert visits == [("AB123CD", True), ("XY987ZZ", False)]
    from models.tables import ConsumerCursor, StoredEvent

    stored = rows(settings, StoredEvent)
    (cursor,) = [c for c in rows(settings, ConsumerCursor) if c.name == "enforcement"]
    assert cursor.seq == max(e.seq for e in stored)  # past the bad one: it does not block later events
    comp.drain()
    assert len(rows(settings, VisitRow)) == 2  # nothing applied twice


@pytest.mark.parametrize(("min_occupancy", "fined"), [(50, True), (60, False)])
def test_occupancy_gate_counts_the_sites_open_visits(tmp_path, db_url, clock, min_occupancy, fined):
    # The open-visit count is read only for rules that gate on occupancy: here one car in two bays is
    # 50 % occupancy, enough for a 50 % gate and not for a 60 % one.
    gen = _env(tmp_path, db_url, clock, {**RULES, "min_occupancy_pct": min_occupancy})
    settings, client, clock, comp, auth, _ = next(gen)
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD"), charger(1, "transaction_started", t0 + timedelta(minutes=1)),
         charger(3, "charging_idle", t0 + timedelta(minutes=5), reason="SuspendedEV"))
    clock.advance(minutes=20)
    comp.drain()
    comp.service.sweep()
    assert bool(rows(settings, Penalty)) == fined
    gen.close()
