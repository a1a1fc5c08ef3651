"""Bays and site rules edited through the API: validation, roles, audit, and the engine picking the edits up
without a restart while visits already in progress keep the rules they started with."""

from datetime import timedelta

import pytest

from models.tables import Alert, AuditLog, Role, VisitRow
from service.enforcement_control import EnforcementComponent
from tests.enforcement.test_service import arrive, ev, post, rows
from tests.foundation.helpers import EDGE_TOKEN, add_user, client_for, login, make_settings

RULES = {"idle_grace_min": 10, "idle_fee_per_min": "0.50", "idle_fee_cap": "30.00", "currency": "EUR"}


@pytest.fixture
def env(tmp_path, db_url, clock):
    settings = make_settings(
        tmp_path, db_url,
        components={"api": True, "scheduler": False, "cameras": False, "relay": False, "enforcement": False},
        cameras=[{"name": "gate", "url": "rtsp://127.0.0.1:1/x", "zones": [
            {"bay_id": "B1", "polygon": [[0, 0], [10, 0], [10, 10]]},
            {"bay_id": "B9", "polygon": [[20, 0], [30, 0], [30, 10]]}]}],
        enforcement={"rules": RULES, "bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]},
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "op", Role.operator)
    add_user(settings, "view", Role.viewer)
    add_user(settings, "root", Role.admin)
    with client:
        csrf = login(client, "root")
        token = client.post("/api/v1/tokens", json=EDGE_TOKEN, headers={"X-CSRF-Token": csrf})
        client.post("/logout", headers={"X-CSRF-Token": csrf})
        csrf = login(client, "op")
        ctx = client.app.state.ctx
        comp = EnforcementComponent(ctx)
        comp.service = comp._build()
        ctx.enforcement = comp  # the routes reload it, as they do the running engine
        yield settings, client, clock, comp, {"Authorization": f"Bearer {token.json()['token']}"}, {
            "X-CSRF-Token": csrf}


def test_config_bays_are_listed_read_only(env):
    _, client, _, _, _, h = env
    (b1,) = client.get("/api/v1/bays").json()
    assert b1["bay_id"] == "B1" and b1["source"] == "config" and b1["cameras"] == ["gate"]
    assert b1["effective_rules"]["idle_grace_min"] == 10 and b1["live"]["charging"] == "none"
    r = client.patch("/api/v1/bays/B1", json={"connector_id": 2}, headers=h)
    assert r.status_code == 409 and "config file" in r.json()["detail"]
    assert client.delete("/api/v1/bays/B1", headers=h).status_code == 409


def test_new_bay_is_used_by_the_engine_without_restart(env):
    settings, client, clock, comp, auth, h = env
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD", bay="B9"))
    comp.drain()
    assert [a.kind for a in rows(settings, Alert)] == ["unknown_bay"]
    r = client.post("/api/v1/bays", json={"bay_id": "B9", "charge_point_id": "CP1", "connector_id": 2,
                                          "rules": {"idle_grace_min": 5}}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "api" and r.json()["effective_rules"]["idle_grace_min"] == 5
    post(client, auth, arrive(2, t0 + timedelta(minutes=1), "XY987ZZ", bay="B9"))
    comp.drain()
    (visit,) = rows(settings, VisitRow)
    assert visit.bay_id == "B9" and visit.plate == "XY987ZZ" and visit.data["rules"]["idle_grace_min"] == 5
    (entry,) = [a for a in rows(settings, AuditLog) if a.entity == "bay"]
    assert entry.action == "create" and entry.actor == "op" and entry.after["connector_id"] == 2


def test_bay_validation_and_roles(env):
    _, client, _, _, _, h = env
    bad = client.post("/api/v1/bays", json={"bay_id": "../x"}, headers=h)
    assert bad.status_code == 422
    bad_rules = client.post("/api/v1/bays", json={"bay_id": "B2", "rules": {"idle_grace_min": -3}}, headers=h)
    assert bad_rules.status_code == 422 and "idle_grace_min" in bad_rules.json()["detail"]
    unknown = client.post("/api/v1/bays", json={"bay_id": "B2", "rules": {"speed": 3}}, headers=h)
    assert unknown.status_code == 422 and "speed" in unknown.json()["detail"]
    same_outlet = client.post("/api/v1/bays", json={"bay_id": "B2", "charge_point_id": "CP1", "connector_id": 1},
                              headers=h)
    assert same_outlet.status_code == 409 and "B1" in same_outlet.json()["detail"]
    assert client.post("/api/v1/bays", json={"bay_id": "B1"}, headers=h).status_code == 409
    client.post("/logout", headers=h)
    csrf = login(client, "view")
    assert client.get("/api/v1/bays").status_code == 200
    r = client.post("/api/v1/bays", json={"bay_id": "B3"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    r = client.put("/api/v1/rules", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403


def test_edit_and_delete_api_bay(env):
    settings, client, clock, comp, auth, h = env
    assert client.post("/api/v1/bays", json={"bay_id": "B9"}, headers=h).status_code == 201
    r = client.patch("/api/v1/bays/B9", json={"charge_point_id": "CP2", "evse_id": 1}, headers=h)
    assert r.status_code == 200 and r.json()["charge_point_id"] == "CP2" and r.json()["evse_id"] == 1
    assert comp.service.bays["B9"].charge_point_id == "CP2"
    assert client.patch("/api/v1/bays/B9", json={"evse_id": -1}, headers=h).status_code == 422
    assert client.patch("/api/v1/bays/B9", json={"colour": "red"}, headers=h).status_code == 422
    post(client, auth, arrive(1, clock(), "AB123CD", bay="B9"))
    comp.drain()
    r = client.delete("/api/v1/bays/B9", headers=h)
    assert r.status_code == 409 and "in progress" in r.json()["detail"]
    assert client.delete("/api/v1/bays/B404", headers=h).status_code == 404


def test_wiring_change_applies_to_a_stored_bay_state(env):
    """A bay re-wired to another connector follows the new connector even though its state row is older."""
    settings, client, clock, comp, auth, h = env
    t0 = clock()
    client.post("/api/v1/bays", json={"bay_id": "B9", "charge_point_id": "CP1", "connector_id": 2}, headers=h)
    post(client, auth, arrive(1, t0, "AB123CD", bay="B9"))
    comp.drain()
    client.patch("/api/v1/bays/B9", json={"connector_id": 3}, headers=h)
    post(client, auth, ev("cp-1", "transaction_started", t0 + timedelta(minutes=1), charge_point_id="CP1",
                          transaction_id="T1", connector_id=3))
    comp.drain()
    (visit,) = rows(settings, VisitRow)
    assert visit.transaction_id == "T1"


def test_site_rules_edit_applies_to_new_visits_only(env):
    settings, client, clock, comp, auth, h = env
    t0 = clock()
    post(client, auth, arrive(1, t0, "AB123CD"))
    comp.drain()
    rules = client.get("/api/v1/rules").json()
    assert rules["overrides"] == {} and rules["effective"]["idle_grace_min"] == 10
    new = {**rules["effective"], "idle_grace_min": 20, "idle_fee_per_min": "0.75"}
    r = client.put("/api/v1/rules", json=new, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["overrides"] == {"idle_grace_min": 20, "idle_fee_per_min": "0.75"}
    assert r.json()["from_file"]["idle_grace_min"] == 10 and r.json()["updated_by"] == "op"
    post(client, auth, arrive(2, t0 + timedelta(minutes=1), "XY987ZZ", bay="B1"))  # same bay: car 1 still there
    client.post("/api/v1/bays", json={"bay_id": "B9"}, headers=h)
    post(client, auth, arrive(3, t0 + timedelta(minutes=2), "CD456EF", bay="B9"))
    comp.drain()
    by_plate = {v.plate: v for v in rows(settings, VisitRow)}
    assert by_plate["AB123CD"].data["rules"]["idle_grace_min"] == 10  # running visit keeps its snapshot
    assert by_plate["CD456EF"].data["rules"]["idle_grace_min"] == 20
    bad = client.put("/api/v1/rules", json={**new, "idle_grace_min": -1}, headers=h)
    assert bad.status_code == 422
    reset = client.delete("/api/v1/rules/overrides", headers=h)
    assert reset.status_code == 200 and reset.json()["overrides"] == {}
    assert comp.service.site_rules.idle_grace_min == 10
    actions = [(a.entity, a.action) for a in rows(settings, AuditLog) if a.entity == "rules"]
    assert actions == [("rules", "update"), ("rules", "reset")]


def test_running_engine_reloads_between_events(tmp_path, db_url, clock):
    """With the engine thread running, an added bay is in force once the API call returns."""
    import time

    settings = make_settings(
        tmp_path, db_url,
        components={"api": True, "scheduler": False, "cameras": False, "relay": False, "enforcement": True},
        enforcement={"rules": RULES, "bays": []},
    )
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.db import upgrade

    upgrade(settings.db_url)
    add_user(settings, "root", Role.admin)
    client = TestClient(create_app(settings, clock=clock), follow_redirects=False)  # with its real components
    with client:
        csrf = login(client, "root")
        h = {"X-CSRF-Token": csrf}
        token = client.post("/api/v1/tokens", json=EDGE_TOKEN, headers=h).json()["token"]
        assert client.post("/api/v1/bays", json={"bay_id": "B7"}, headers=h).status_code == 201
        assert client.app.state.ctx.enforcement.service.bays.keys() == {"B7"}
        post(client, {"Authorization": f"Bearer {token}"}, arrive(1, clock(), "AB123CD", bay="B7"))
        deadline = time.monotonic() + 10
        while not rows(settings, VisitRow) and time.monotonic() < deadline:
            time.sleep(0.1)
        (visit,) = rows(settings, VisitRow)
        assert visit.bay_id == "B7" and not rows(settings, Alert)
