"""Bearer tokens and the event intake that edge workers post to."""

from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from models.db import make_engine
from models.tables import PlateReadRow, Presence, Role, StoredEvent
from tests.foundation.helpers import add_user, client_for, login, make_settings


@pytest.fixture
def env(tmp_path, db_url, clock):
    settings = make_settings(tmp_path, db_url)
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    with client:
        csrf = login(client, "root")
        body = {"name": "edge-1", "scopes": ["camera:*"]}
        r = client.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text
        yield settings, client, csrf, r.json()


def rows(settings, model):
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        out = list(db.exec(select(model)))
    engine.dispose()
    return out


def arrival(event_id="ev-000001", plate="AB123CD"):
    return {
        "event_id": event_id,
        "event": {
            "kind": "vehicle_arrived", "at": "2026-11-02T09:00:00Z", "presence_id": "p-1", "camera": "gate",
            "bay_id": "B1", "plate": plate, "confidence": 0.97, "char_confidences": [0.9] * 7,
            "evidence": {"frame_path": "gate/2026-11-02/x-frame.jpg", "crop_path": "gate/2026-11-02/x-crop.jpg"},
        },
    }


def test_token_shown_once_and_device_scope(env):
    settings, client, csrf, created = env
    assert created["token"].startswith("bw_") and created["role"] == "device"
    listed = client.get("/api/v1/tokens").json()
    assert listed[0]["name"] == "edge-1" and "token" not in listed[0]
    client.cookies.clear()
    auth = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/users", headers=auth).status_code == 403  # device may only post events
    assert client.get("/api/v1/me", headers=auth).json()["role"] == "device"
    assert client.get("/api/v1/users", headers={"Authorization": "Bearer bw_wrong"}).status_code == 401


def test_intake_is_idempotent_and_feeds_read_models(env):
    settings, client, csrf, created = env
    client.cookies.clear()
    auth = {"Authorization": f"Bearer {created['token']}"}
    read = {
        "event_id": "ev-000002",
        "event": {"kind": "plate_read", "at": "2026-11-02T09:00:01Z", "camera": "gate", "bay_id": "B1",
                  "plate": None, "raw_text": "A?12", "confidence": 0.2, "accepted": False,
                  "reject_reason": "no plate format matched"},
    }
    r = client.post("/api/v1/events", json={"events": [arrival(), read]}, headers=auth)
    assert r.json() == {"accepted": 2, "duplicates": 0}
    r = client.post("/api/v1/events", json={"events": [arrival()]}, headers=auth)
    assert r.json() == {"accepted": 0, "duplicates": 1}
    assert len(rows(settings, StoredEvent)) == 2
    (presence,) = rows(settings, Presence)
    assert presence.plate == "AB123CD" and presence.first_seen == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    (plate_read,) = rows(settings, PlateReadRow)
    assert plate_read.accepted is False and plate_read.reject_reason == "no plate format matched"
    # The stored event source names the token, for the audit of where data came from.
    assert {e.source for e in rows(settings, StoredEvent)} == {"token:edge-1"}


def test_intake_rejects_bad_bodies_whole(env):
    settings, client, csrf, created = env
    client.cookies.clear()
    auth = {"Authorization": f"Bearer {created['token']}"}
    naive = arrival("ev-000003")
    naive["event"]["at"] = "2026-11-02T09:00:00"  # no time zone
    bad_kind = arrival("ev-000004")
    bad_kind["event"]["kind"] = "teleported"
    for body in ({"events": [arrival("ev-000005"), naive]}, {"events": [bad_kind]}, {"events": []}, {"x": 1}):
        r = client.post("/api/v1/events", json=body, headers=auth)
        assert r.status_code == 422, body
    assert rows(settings, StoredEvent) == []
    assert client.post("/api/v1/events", json={"events": [arrival()]}).status_code == 401


def test_revoked_token_refused(env):
    settings, client, csrf, created = env
    r = client.post(f"/api/v1/tokens/{created['id']}/revoke", headers={"X-CSRF-Token": csrf})
    assert r.json()["revoked"] is True
    client.cookies.clear()
    auth = {"Authorization": f"Bearer {created['token']}"}
    r = client.post("/api/v1/events", json={"events": [arrival()]}, headers=auth)
    assert r.status_code == 401


def _idle_chain(prefix: str) -> list[dict]:
    """What the security review posted as a viewer: arrival, transaction, idle -> a 17.50 EUR penalty."""
    at = "2026-11-02T09:00:00Z"
    tx = {"charge_point_id": "CP1", "transaction_id": "T1", "connector_id": 1}
    return [
        {"event_id": f"{prefix}-event-arr1", "event": {"kind": "vehicle_arrived", "at": at, "presence_id": "p9",
                                                  "camera": "gate", "bay_id": "B1", "plate": "VICTIM1",
                                                  "confidence": 0.99}},
        {"event_id": f"{prefix}-event-tx01", "event": {"kind": "transaction_started", "at": at, **tx}},
        {"event_id": f"{prefix}-event-idl1", "event": {"kind": "charging_idle", "at": at, **tx}},
    ]


@pytest.mark.parametrize("role", [Role.viewer, Role.operator, Role.admin])
def test_people_cannot_post_events_with_a_session_or_a_token(env, role):
    """Finding 1 (high): any logged-in role could post events and so raise a penalty."""
    settings, client, csrf, created = env
    add_user(settings, f"u-{role.value}", role)
    r = client.post("/api/v1/tokens", json={"name": f"t-{role.value}", "role": role.value},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    client.cookies.clear()
    user_csrf = login(client, f"u-{role.value}")
    r = client.post("/api/v1/events", json={"events": _idle_chain("s")}, headers={"X-CSRF-Token": user_csrf})
    assert r.status_code == 403, r.text
    client.cookies.clear()
    r = client.post("/api/v1/events", json={"events": _idle_chain("t")}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text
    upstream = {"event_id": "up-000001", "event": {"kind": "relay_upstream", "at": "2026-11-02T09:00:00Z",
                                                   "upstream": "ws://evil", "up": False, "detail": "pwned"}}
    r = client.post("/api/v1/events", json={"events": [upstream]}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert rows(settings, StoredEvent) == []


def test_device_tokens_post_only_for_their_scopes(env):
    settings, client, csrf, created = env  # edge-1: camera:* only
    r = client.post("/api/v1/tokens", json={"name": "north", "scopes": ["camera:north-*", "charger:CP7"]},
                    headers={"X-CSRF-Token": csrf})
    north = {"Authorization": f"Bearer {r.json()['token']}"}
    assert r.json()["scopes"] == ["camera:north-*", "charger:CP7"]
    for body, why in (({"name": "x"}, "needs scopes"), ({"name": "y", "scopes": ["gate"]}, "pattern"),
                      ({"name": "z", "role": "viewer", "scopes": ["camera:*"]}, "only device")):
        r = client.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 422, (body, why)
    client.cookies.clear()
    edge = {"Authorization": f"Bearer {created['token']}"}
    # A camera-only token cannot post charger events: the whole batch is refused, nothing stored.
    r = client.post("/api/v1/events", json={"events": _idle_chain("e")}, headers=edge)
    assert r.status_code == 403 and "events[1]" in r.text and "charger:CP1" in r.text
    assert rows(settings, StoredEvent) == []
    r = client.post("/api/v1/events", json={"events": [arrival()]}, headers=north)
    assert r.status_code == 403 and "camera:gate" in r.text
    ok = arrival("ev-north01")
    ok["event"]["camera"] = "north-2"
    assert client.post("/api/v1/events", json={"events": [ok]}, headers=north).status_code == 200
    tx = {"event_id": "ev-cp7-001", "event": {"kind": "transaction_started", "at": "2026-11-02T09:00:00Z",
                                              "charge_point_id": "CP7", "transaction_id": "T7"}}
    assert client.post("/api/v1/events", json={"events": [tx]}, headers=north).status_code == 200
    tx["event_id"], tx["event"]["charge_point_id"] = "ev-cp8-001", "CP8"
    assert client.post("/api/v1/events", json={"events": [tx]}, headers=north).status_code == 403
    assert len(rows(settings, StoredEvent)) == 2


def test_no_user_can_hold_the_device_role(env):
    settings, client, csrf, created = env
    body = {"username": "dev1", "password": "a good long password", "role": "device"}
    r = client.post("/api/v1/users", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422
