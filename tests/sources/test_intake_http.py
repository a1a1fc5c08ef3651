"""The source intakes through the real app and database (SQLite and PostgreSQL): credentials, replays,
pictures kept as evidence, refusals counted with their reason, and a Hikvision camera's read joined to a
charger's transaction ending in one idle fee with the camera's picture."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import cv2
import numpy as np
import pytest
from sqlmodel import Session, select

from models.db import make_engine
from models.tables import Penalty, Presence, Role, SourcePresence, StoredEvent, VisitRow
from service.build import sweep_sources
from service.enforcement_control import EnforcementComponent
from tests.foundation.helpers import add_user, client_for, login, make_settings
from tests.sources.test_presence_and_formats import PR, hik_xml

SECRET = "source-secret-0123456789"
CSMS = "csms-secret-0123456789abc"


def jpeg(w=320, h=240) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture
def env(tmp_path, db_url, clock):
    settings = make_settings(
        tmp_path, db_url,
        sources=[
            {"name": "lanes", "kind": "webhook", "secret": SECRET, "cameras": [{"id": "lane1", "bay_id": "B1"}]},
            {"name": "pr", "kind": "platerecognizer", "secret": SECRET, "cameras": [{"id": "gate-2", "bay_id": "B2"}]},
            {"name": "hik", "kind": "hikvision", "secret": SECRET, "presence_timeout_s": 14400,
             "cameras": [{"id": "10.0.0.21/1", "bay_id": "B1"}]},
        ],
        csms_intakes=[{"name": "csms", "auth": "bearer", "secret": CSMS}],
        enforcement={"rules": {"idle_grace_min": 10, "idle_fee_per_min": "0.40", "idle_fee_cap": "20.00"},
                     "bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1},
                              {"bay_id": "B2", "charge_point_id": "CP2", "connector_id": 1}]},
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "vic", Role.viewer)
    with client:
        yield settings, client, clock


def signed(clock, body: bytes, name="lanes", secret=SECRET) -> dict:
    ts = str(int(clock().timestamp()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Baywarden-Source": name, "X-Baywarden-Timestamp": ts, "X-Baywarden-Signature": f"sha256={sig}",
            "Content-Type": "application/json"}


def events(settings) -> list[StoredEvent]:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        rows = list(db.exec(select(StoredEvent).order_by(StoredEvent.seq)))
    engine.dispose()
    return rows


def test_signed_webhook_reads_become_our_events_once(env):
    settings, client, clock = env
    body = json.dumps({"id": "r1", "camera": "lane1", "plate": "AB123CD", "confidence": 0.97,
                       "at": clock().isoformat()}).encode()
    r = client.post("/api/v1/sources/lanes/reads", content=body, headers=signed(clock, body))
    assert r.status_code == 200 and r.json() == {"reads": 1, "events": 2}
    assert client.post("/api/v1/sources/lanes/reads", content=body, headers=signed(clock, body)).status_code == 409
    clock.advance(seconds=1)
    again = client.post("/api/v1/sources/lanes/reads", content=body, headers=signed(clock, body))  # re-signed
    assert again.status_code == 200 and again.json()["events"] == 0  # same read id: nothing twice
    rows = events(settings)
    assert [e.kind for e in rows] == ["plate_read", "vehicle_arrived"]
    assert rows[1].source == "source:lanes" and rows[1].payload["camera"] == "lanes:lane1"
    assert rows[1].payload["bay_id"] == "B1" and rows[1].payload["plate"] == "AB123CD"


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"X-Baywarden-Source": "lanes", "X-Baywarden-Timestamp": "1", "X-Baywarden-Signature": "sha256=00"}, 401),
])
def test_webhook_refusals_store_nothing_and_are_counted(env, headers, status):
    settings, client, clock = env
    body = b'{"id": "r1", "camera": "lane1", "plate": "AB1"}'
    assert client.post("/api/v1/sources/lanes/reads", content=body, headers=headers).status_code == status
    wrong = json.dumps({"id": "r2", "camera": "nowhere", "plate": "AB1"}).encode()
    r = client.post("/api/v1/sources/lanes/reads", content=wrong, headers=signed(clock, wrong))
    assert r.status_code == 422 and "not mapped" in r.json()["detail"]
    assert client.post("/api/v1/sources/nope/reads", content=body).status_code == 404
    assert events(settings) == []
    login(client, "vic")
    (lanes,) = [s for s in client.get("/api/v1/sources").json() if s["name"] == "lanes"]
    assert lanes["rejected"] == 2 and "not mapped" in lanes["last_error"] and lanes["accepted"] == 0


def test_plate_recognizer_multipart_keeps_its_picture(env):
    settings, client, clock = env
    picture = jpeg()
    r = client.post("/api/v1/sources/pr/platerecognizer", headers={"Authorization": f"Token {SECRET}"},
                    data={"json": json.dumps(PR)}, files={"upload": ("gate-2.jpg", picture, "image/jpeg")})
    assert r.status_code == 200, r.text
    arrived = next(e for e in events(settings) if e.kind == "vehicle_arrived")
    path = settings.evidence_dir / arrived.payload["evidence"]["frame_path"]
    assert path.read_bytes() == picture and oct(path.stat().st_mode & 0o777) == "0o640"
    assert arrived.payload["plate"] == "7ABC123" and arrived.payload["bay_id"] == "B2"
    bad = client.post("/api/v1/sources/pr/platerecognizer?token=wrong", json=PR)
    assert bad.status_code == 401


def test_hikvision_push_with_basic_auth_and_hostile_bodies(env):
    settings, client, clock = env
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{SECRET}".encode()).decode()}
    files = [("MoveDetection", ("event.xml", hik_xml(), "application/xml")),
             ("licensePlatePicture.jpg", ("licensePlatePicture.jpg", jpeg(120, 40), "image/jpeg")),
             ("detectionPicture.jpg", ("detectionPicture.jpg", jpeg(), "image/jpeg"))]
    r = client.post("/api/v1/sources/hik/hikvision", headers=basic, files=files)
    assert r.status_code == 200 and r.json()["events"] == 2, r.text
    bomb = hik_xml(extra='<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>').replace(b"AB123CD", b"&b;")
    r = client.post("/api/v1/sources/hik/hikvision", headers=basic, content=bomb)
    assert r.status_code == 422 and "entities" in r.json()["detail"]
    truncated = b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n<EventNot"
    r = client.post("/api/v1/sources/hik/hikvision", content=truncated,
                    headers={**basic, "Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 422
    assert client.post("/api/v1/sources/hik/hikvision", content=hik_xml()).status_code == 401
    assert len([e for e in events(settings) if e.kind == "vehicle_arrived"]) == 1


def test_a_hikvision_read_and_a_charger_make_one_idle_fee_with_the_cameras_picture(env):
    """The camera reads the car once; the charger's transaction (CSMS intake) starts, goes idle and ends
    40 minutes later; the cable coming out is the car's departure: one penalty of 30 x 0.40, evidence
    is the camera's picture."""
    settings, client, clock = env
    ctx = client.app.state.ctx
    engine_part = EnforcementComponent(ctx, notify=ctx.notify)
    engine_part.service = engine_part._build()
    basic = {"Authorization": "Basic " + base64.b64encode(f"cam:{SECRET}".encode()).decode()}
    t0 = clock()
    xml = hik_xml().replace(b"2026-12-06T10:00:05+01:00", t0.isoformat().encode())
    files = [("event", ("e.xml", xml, "text/xml")), ("detectionPicture.jpg", ("d.jpg", jpeg(), "image/jpeg")),
             ("licensePlatePicture.jpg", ("p.jpg", jpeg(120, 40), "image/jpeg"))]
    r = client.post("/api/v1/sources/hik/hikvision", headers=basic, files=files)
    assert r.status_code == 200, r.text

    def csms(eid, type_, minutes, **kw):
        body = {"event_id": eid, "type": type_, "at": (t0 + timedelta(minutes=minutes)).isoformat(),
                "charge_point_id": "CP1", "connector_id": 1, "transaction_id": "T1", **kw}
        r = client.post("/api/v1/csms/events", json=body, headers={"Authorization": f"Bearer {CSMS}"})
        assert r.status_code == 200, r.text

    csms("c1", "transaction_started", 1)
    csms("c2", "charging_idle", 20, reason="SuspendedEV")
    clock.advance(minutes=61)
    csms("c3", "transaction_ended", 60, reason="EVDisconnected")
    engine_part.drain()
    engine_part.service.sweep()
    assert sweep_sources(ctx) == 1  # the cable came out: the car left then
    assert sweep_sources(ctx) == 0
    engine_part.drain()
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        penalties = list(db.exec(select(Penalty)))
        (visit,) = list(db.exec(select(VisitRow)))
        presence = db.get(Presence, visit.data["presence_id"])
        assert list(db.exec(select(SourcePresence))) == []
    engine.dispose()
    assert [(p.plate, p.amount) for p in penalties] == [("AB123CD", "12.00")]  # 40 idle min - 10 grace
    assert presence is not None, visit.data
    assert presence.frame_path.startswith("sources/hik/") and presence.crop_path.startswith("sources/hik/")
    assert ctx.notify._evidence(Session(make_engine(settings.db_url)), visit.visit_id) == [presence.crop_path]


def test_a_flooding_source_is_refused_without_slowing_the_others(tmp_path, sqlite_url, clock):
    settings = make_settings(
        tmp_path, sqlite_url,
        sources=[{"name": "flood", "kind": "platerecognizer", "secret": SECRET, "max_per_s": 0.5, "burst": 2,
                  "cameras": [{"id": "gate-2", "bay_id": "B2"}]},
                 {"name": "calm", "kind": "platerecognizer", "secret": SECRET,
                  "cameras": [{"id": "gate-2", "bay_id": "B1"}]}],
    )
    client = client_for(settings, clock=clock)
    auth = {"Authorization": f"Token {SECRET}"}
    with client:
        codes = [client.post("/api/v1/sources/flood/platerecognizer", json=PR, headers=auth).status_code
                 for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
        r = client.post("/api/v1/sources/flood/platerecognizer", json=PR, headers=auth)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert client.post("/api/v1/sources/calm/platerecognizer", json=PR, headers=auth).status_code == 200


def test_sources_page_shows_counts_and_decodes_a_sample_without_storing(env):
    settings, client, clock = env
    from tests.foundation.helpers import add_user

    add_user(settings, "op", Role.operator)
    bad = json.dumps({"id": "r9", "camera": "nowhere", "plate": "AB1"}).encode()
    client.post("/api/v1/sources/lanes/reads", content=bad, headers=signed(clock, bad))
    csrf = login(client, "op")
    page = client.get("/dash/sources")
    assert page.status_code == 200 and 'data-source="lanes"' in page.text and "not mapped" in page.text
    r = client.post("/dash/sources/test", data={"csrf_token": csrf, "source": "hik", "sample": hik_xml().decode()})
    assert r.status_code == 200 and "AB123CD" in r.text and "B1" in r.text
    r = client.post("/dash/sources/test", data={"csrf_token": csrf, "source": "lanes", "sample": "{broken"})
    assert r.status_code == 422 and "not JSON" in r.text
    assert events(settings) == []  # decoding stores nothing


def test_a_camera_posts_over_real_http(tmp_path, sqlite_url):
    """The Hikvision intake through uvicorn on 127.0.0.1 and a real HTTP client (httpx over TCP): the
    multipart push a camera sends, with HTTP Basic; the read is stored with its pictures."""
    import threading
    import time

    import httpx
    import uvicorn

    from api.app import create_app
    from baywarden.demo import free_port
    from models.db import upgrade

    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, port=port, sources=[
        {"name": "hik", "kind": "hikvision", "secret": SECRET, "cameras": [{"id": "10.0.0.21/1", "bay_id": "B1"}]}])
    upgrade(sqlite_url)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, components=[]), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        files = [("event", ("e.xml", hik_xml(), "application/xml")),
                 ("detectionPicture.jpg", ("d.jpg", jpeg(), "image/jpeg"))]
        url = f"http://127.0.0.1:{port}/api/v1/sources/hik/hikvision"
        r = httpx.post(url, files=files, auth=("admin", SECRET), timeout=10)
        assert r.status_code == 200 and r.json() == {"reads": 1, "events": 2}, r.text
        assert httpx.post(url, files=files, auth=("admin", "wrong"), timeout=10).status_code == 401
    finally:
        server.should_exit = True
        thread.join(10)
    arrived = next(e for e in events(settings) if e.kind == "vehicle_arrived")
    assert arrived.payload["plate"] == "AB123CD" and arrived.payload["evidence"]["frame_path"]
