"""CSMS intake through the real app: signatures, replays, idempotency, the three body forms, state."""

import hashlib
import hmac
import json

import pytest
from sqlmodel import Session, select

from models.db import make_engine
from models.tables import Role, StoredEvent
from tests.foundation.helpers import add_user, client_for, login, make_settings

SECRET = "a-very-long-shared-secret"
TOKEN = "ocpi-token-0123456789"


@pytest.fixture
def env(tmp_path, db_url, clock):
    settings = make_settings(
        tmp_path, db_url,
        csms_intakes=[{"name": "citrine", "auth": "hmac", "secret": SECRET},
                      {"name": "hub", "auth": "bearer", "secret": TOKEN}],
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "vic", Role.viewer)
    with client:
        yield settings, client, clock


def signed(clock, body: bytes, ts: int | None = None, secret: str = SECRET) -> dict:
    ts = int(clock().timestamp()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Baywarden-CSMS": "citrine", "X-Baywarden-Timestamp": str(ts), "X-Baywarden-Signature": f"sha256={sig}",
            "Content-Type": "application/json"}


def post(client, clock, obj, **kw):
    body = json.dumps(obj).encode()
    return client.post("/api/v1/csms/events", content=body, headers=signed(clock, body, **kw))


def stored(settings):
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        rows = list(db.exec(select(StoredEvent).order_by(StoredEvent.seq)))
    engine.dispose()
    return rows


def own(event_id, type_, **extra):
    return {"event_id": event_id, "type": type_, "at": "2026-11-02T09:00:00Z", "charge_point_id": "CP1",
            "transaction_id": "77", "evse_id": 1, "connector_id": 1, **extra}


def test_signature_rules(env):
    settings, client, clock = env
    body = json.dumps(own("e1", "transaction_started")).encode()
    r = client.post("/api/v1/csms/events", content=body)
    assert r.status_code == 401 and "unsigned" in r.json()["detail"]
    bad = signed(clock, body)
    bad["X-Baywarden-Signature"] = "sha256=" + "0" * 64
    assert client.post("/api/v1/csms/events", content=body, headers=bad).json()["detail"] == "bad signature"
    stale = signed(clock, body, ts=int(clock().timestamp()) - 3600)
    assert "stale" in client.post("/api/v1/csms/events", content=body, headers=stale).json()["detail"]
    wrong_key = signed(clock, body, secret="x" * 20)
    assert client.post("/api/v1/csms/events", content=body, headers=wrong_key).status_code == 401
    assert stored(settings) == []
    good = signed(clock, body)
    assert client.post("/api/v1/csms/events", content=body, headers=good).json() == {"duplicate": False, "events": 1}
    r = client.post("/api/v1/csms/events", content=body, headers=good)  # the very same request again
    assert r.status_code == 409 and "replayed" in r.json()["detail"]
    clock.advance(seconds=2)  # a new, correctly signed request carrying the same event id
    assert post(client, clock, own("e1", "transaction_started")).json() == {"duplicate": True, "events": 0}
    assert len(stored(settings)) == 1


def test_own_form_builds_transaction_state(env):
    settings, client, clock = env
    assert post(client, clock, own("e1", "transaction_started", id_token="04AABBCC")).status_code == 200
    clock.advance(seconds=1)
    r = post(client, clock, own("e2", "transaction_updated", charging_state="Charging", energy_wh=1500))
    assert r.status_code == 200
    clock.advance(seconds=1)
    assert post(client, clock, own("e3", "charging_idle", at="2026-11-02T10:00:00Z")).status_code == 200
    login(client, "vic")
    (cp,) = client.get("/api/v1/chargers").json()
    assert cp["id"] == "CP1"
    (tx,) = cp["active_transactions"]
    assert tx["transaction_id"] == "77" and tx["charging_state"] == "Idle" and tx["energy_wh"] == 1500
    assert tx["idle_since"].startswith("2026-11-02T10:00:00")
    assert cp["connectors"][0]["status"] == "Idle"
    # The raw id token is never stored, only its hash.
    assert "04AABBCC" not in json.dumps([e.payload for e in stored(settings)])
    clock.advance(seconds=1)
    post(client, clock, own("e4", "transaction_ended", at="2026-11-02T10:30:00Z", reason="EVDisconnected"))
    assert client.get("/api/v1/transactions", params={"active": True}).json() == []
    assert client.get("/api/v1/transactions").json()[0]["ended_at"].startswith("2026-11-02T10:30")


def test_bad_bodies_store_nothing(env):
    settings, client, clock = env
    for obj in ({"hello": 1}, own("e9", "teleport"), own("e9", "transaction_started", at="2026-11-02T09:00:00"),
                [1, 2]):
        r = post(client, clock, obj)
        assert r.status_code == 422, obj
        clock.advance(seconds=1)
    body = b"{not json"
    assert client.post("/api/v1/csms/events", content=body, headers=signed(clock, body)).status_code == 422
    big = b" " * (300 * 1024)
    assert client.post("/api/v1/csms/events", content=big, headers=signed(clock, big)).status_code == 413
    assert stored(settings) == []


def test_citrine_frames_go_through_the_decoder(env):
    settings, client, clock = env
    req = [2, "m-1", "StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0,
                                           "timestamp": "2026-11-02T09:00:00Z"}]
    conf = [3, "m-1", {"transactionId": 4242, "idTagInfo": {"status": "Accepted"}}]
    r1 = post(client, clock, {"id": "c1", "stationId": "CP7", "origin": "cs", "message": req})
    assert r1.json() == {"duplicate": False, "events": 0}  # the id is only known from the answer
    clock.advance(seconds=1)
    r2 = post(client, clock, {"id": "c2", "stationId": "CP7", "origin": "csms", "message": json.dumps(conf)})
    assert r2.json() == {"duplicate": False, "events": 1}
    (ev,) = [e for e in stored(settings) if e.kind == "transaction_started"]
    assert ev.payload["charge_point_id"] == "CP7" and ev.payload["transaction_id"] == "4242"
    assert "TAG1" not in json.dumps(ev.payload)
    clock.advance(seconds=1)
    r3 = post(client, clock, {"id": "c3", "stationId": "CP7", "origin": "cs", "message": "not a frame"})
    assert r3.status_code == 200 and r3.json()["events"] == 0  # tolerated and counted by the decoder


def ocpi(client, method, sid, body, token=TOKEN):
    return client.request(method, f"/ocpi/2.2.1/sessions/NL/ABC/{sid}", content=json.dumps(body),
                          headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})


def test_ocpi_sessions(env):
    settings, client, clock = env
    session = {"country_code": "NL", "party_id": "ABC", "id": "S1", "start_date_time": "2026-11-02T09:00:00Z",
               "kwh": 0, "evse_uid": "EVSE-9", "connector_id": "2", "status": "ACTIVE", "currency": "EUR",
               "last_updated": "2026-11-02T09:00:00Z"}
    assert ocpi(client, "PUT", "S1", session, token="wrong-token-123456").status_code == 401
    r = ocpi(client, "PUT", "S1", session)
    assert r.status_code == 200 and r.json()["status_code"] == 1000
    assert ocpi(client, "PUT", "S1", session).json()["status_code"] == 1000  # same version: idempotent
    r = ocpi(client, "PATCH", "S1", {"kwh": 12.5, "last_updated": "2026-11-02T09:30:00Z"})
    assert r.status_code == 200
    r = ocpi(client, "PATCH", "S1", {"status": "COMPLETED", "end_date_time": "2026-11-02T10:00:00Z", "kwh": 20,
                                      "last_updated": "2026-11-02T10:00:00Z"})
    assert r.status_code == 200
    kinds = [e.kind for e in stored(settings)]
    assert kinds == ["transaction_started", "transaction_updated", "transaction_ended"]
    ended = stored(settings)[-1].payload
    assert ended["charge_point_id"] == "EVSE-9" and ended["connector_id"] == 2 and ended["energy_wh"] == 20000
    r = ocpi(client, "PATCH", "S404", {"kwh": 1, "last_updated": "2026-11-02T10:00:00Z"})
    assert r.status_code == 400 and r.json()["status_code"] == 2001
    r = ocpi(client, "PUT", "S2", {"id": "S2", "status": "ACTIVE"})
    assert r.status_code == 400 and "required" in r.json()["status_message"]


def test_replay_with_upper_case_signature_is_refused(env):
    """Finding 9: the replay key was built from the raw header, the comparison lower-cased."""
    settings, client, clock = env
    body = json.dumps(own("e-up1", "transaction_started")).encode()
    good = signed(clock, body)
    assert client.post("/api/v1/csms/events", content=body, headers=good).status_code == 200
    upper = dict(good, **{"X-Baywarden-Signature": "sha256=" + good["X-Baywarden-Signature"][7:].upper()})
    r = client.post("/api/v1/csms/events", content=body, headers=upper)
    assert r.status_code == 409 and "replayed" in r.json()["detail"]
    assert len(stored(settings)) == 1


@pytest.mark.parametrize("ts", ["\u0661\u0667" * 5, "9" * 5000, "-1", " 1"])  # Arabic-Indic digits first
def test_odd_timestamps_are_401_not_500(env, ts):
    """Finding 5: non-ASCII digits and a 5,000-digit timestamp gave 500."""
    settings, client, clock = env
    body = json.dumps(own("e-ts1", "transaction_started")).encode()
    headers = dict(signed(clock, body), **{"X-Baywarden-Timestamp": ts.encode()})
    r = client.post("/api/v1/csms/events", content=body, headers=headers)
    assert r.status_code == 401


def test_hostile_signed_bodies_are_422_not_500(env):
    """Finding 5: deeply nested JSON (RecursionError) and connector_id 1e23 (OverflowError) gave 500."""
    settings, client, clock = env
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    r = client.post("/api/v1/csms/events", content=deep, headers=signed(clock, deep))
    assert r.status_code in (413, 422)
    clock.advance(seconds=1)
    r = post(client, clock, own("e-big", "transaction_started", connector_id=1e23))
    assert r.status_code == 422
    clock.advance(seconds=1)
    frame = [2, "m-1", "StatusNotification", {"connectorId": 10**23, "errorCode": "NoError", "status": "Available"}]
    body = {"id": "c-big", "stationId": "CP1", "origin": "cs", "timestamp": "2026-11-02T09:00:00Z", "message": frame}
    r = post(client, clock, body)
    assert r.status_code in (200, 422), r.text
    assert all(e.kind != "connector_available" or e.payload.get("event", {}).get("connector_id", 0) < 2**31
               for e in stored(settings))


def test_outlet_numbers_past_32_bits_are_422_on_the_event_intake(tmp_path, clock):
    """The same id through /api/v1/events answered 503 'retry later', so an edge client retried forever."""
    from tests.foundation.helpers import EDGE_TOKEN

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'e.db'}")
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    with client:
        csrf = login(client, "root")
        token = client.post("/api/v1/tokens", json=EDGE_TOKEN, headers={"X-CSRF-Token": csrf}).json()["token"]
        client.cookies.clear()
        ev = {"event_id": "ev-big-0001", "event": {"kind": "transaction_started", "at": "2026-11-02T09:00:00Z",
                                                  "charge_point_id": "CP1", "transaction_id": "T1",
                                                  "connector_id": 1e23}}
        r = client.post("/api/v1/events", json={"events": [ev]}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 422


def test_a_call_and_its_answer_may_reach_different_instances(tmp_path, db_url, clock):
    """Two app instances on one database (a load balancer in front): the StartTransaction call goes to
    one, its answer with the transaction id to the other; the pairing state lives in the database."""
    settings = make_settings(tmp_path, db_url, csms_intakes=[{"name": "citrine", "auth": "hmac", "secret": SECRET}])
    one, two = client_for(settings, clock=clock), client_for(settings, clock=clock)
    req = [2, "m-9", "StartTransaction", {"connectorId": 2, "idTag": "TAG9", "meterStart": 0,
                                           "timestamp": "2026-11-02T09:00:00Z"}]
    conf = [3, "m-9", {"transactionId": 99, "idTagInfo": {"status": "Accepted"}}]
    stop = [2, "m-10", "StopTransaction", {"transactionId": 99, "meterStop": 5000,
                                           "timestamp": "2026-11-02T10:00:00Z", "reason": "EVDisconnected"}]
    with one, two:
        assert post(one, clock, {"id": "d1", "stationId": "CP9", "origin": "cs", "message": req}).json()["events"] == 0
        clock.advance(seconds=1)
        assert post(two, clock, {"id": "d2", "stationId": "CP9", "origin": "csms", "message": conf}).json() == {
            "duplicate": False, "events": 1}
        clock.advance(seconds=1)
        r = post(one, clock, {"id": "d3", "stationId": "CP9", "origin": "cs", "message": stop})
        assert r.json()["events"] >= 1
    kinds = [(e.kind, e.payload.get("transaction_id"), e.payload.get("connector_id")) for e in stored(settings)]
    assert ("transaction_started", "99", 2) in kinds
    assert any(k == "transaction_ended" and tx == "99" for k, tx, _ in kinds)


def test_stored_decoder_state_round_trips_and_garbage_is_a_fresh_start():
    from datetime import UTC, datetime

    from ocpp_link.decoder import OcppDecoder

    d = OcppDecoder()
    d.decode("CP1", "cs", json.dumps([2, "a", "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0,
                                                                    "timestamp": "2026-11-02T09:00:00Z"}]),
             datetime(2026, 11, 2, 9, tzinfo=UTC))
    state = json.loads(json.dumps(d.export_state("CP1")))  # through JSON, as stored
    e = OcppDecoder()
    e.import_state("CP1", state)
    assert e.export_state("CP1") == state and "a" in state["pending"]
    e.import_state("CP1", {"pending": {"x": [1]}, "txs": "nonsense"})
    assert e.export_state("CP1")["pending"] == {}


@pytest.mark.parametrize("number", ["Infinity", "NaN", "1e999", "-Infinity"])
def test_non_finite_numbers_are_refused_not_stored(env, number):
    """Python's JSON parser lets NaN and Infinity through and PostgreSQL's JSON refuses them: an OCPI kwh of
    Infinity was a 500 on PostgreSQL (found by the OCPI fuzz). They are refused at the door instead."""
    settings, client, clock = env
    body = ('{"country_code": "NL", "party_id": "ABC", "id": "S9", "start_date_time": "2026-11-02T09:00:00Z", '
            f'"kwh": {number}, "evse_uid": "E", "connector_id": "1", "status": "ACTIVE", '
            '"last_updated": "2026-11-02T09:00:00Z"}')
    r = client.put("/ocpi/2.2.1/sessions/NL/ABC/S9", content=body,
                   headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["status_code"] == 2001, r.text
    raw = json.dumps(own("e-inf1", "transaction_ended")).replace('"connector_id": 1', f'"energy_wh": {number}, '
                                                                  '"connector_id": 1').encode()
    r = client.post("/api/v1/csms/events", content=raw, headers=signed(clock, raw))
    assert r.status_code == 422 and "JSON" in r.json()["detail"], r.text
    assert stored(settings) == []


def test_events_refuse_non_finite_numbers():
    from pydantic import ValidationError

    from models.events import EventEnvelope

    with pytest.raises(ValidationError):
        EventEnvelope.model_validate({"event_id": "e" * 10, "event": {
            "kind": "plate_read", "at": "2026-11-02T09:00:00Z", "camera": "c", "bay_id": None, "plate": "AB1",
            "confidence": 0.5, "char_confidences": [float("inf")]}})
