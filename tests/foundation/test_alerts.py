"""Alerts: a failed camera raises one; operators see it live over SSE and acknowledge it."""

import threading
from datetime import UTC, datetime

import httpx
import pytest

from models.tables import Role
from tests.foundation.helpers import (
    EDGE_TOKEN,
    PASSWORD,
    LiveServer,
    add_user,
    client_for,
    free_port,
    listen_alerts,
    login,
    make_settings,
)


def failed_event(event_id: str, camera: str = "gate") -> dict:
    return {"event_id": event_id, "event": {"kind": "camera_state", "at": "2026-11-02T09:00:00Z", "camera": camera,
                                            "state": "failed", "detail": "5 restarts in 60 s"}}


@pytest.fixture
def env(tmp_path, db_url):
    settings = make_settings(tmp_path, db_url, port=free_port())
    client_for(settings)  # migrates
    add_user(settings, "root", Role.admin)
    add_user(settings, "olga", Role.operator)
    add_user(settings, "vic", Role.viewer)
    server = LiveServer(settings).start()
    with httpx.Client(base_url=server.url, timeout=10) as admin:
        csrf = login(admin, "root")
        token = admin.post("/api/v1/tokens", json=EDGE_TOKEN, headers={"X-CSRF-Token": csrf}).json()["token"]
    yield server, {"Authorization": f"Bearer {token}"}
    server.stop()


def test_failed_camera_alert_reaches_open_dashboards_live(env):
    server, device = env
    got: list[dict] = []
    ready = threading.Event()

    t = threading.Thread(target=listen_alerts, args=(server.url, 1, got, ready), daemon=True)
    t.start()
    assert ready.wait(10)
    started = datetime.now(UTC)
    r = httpx.post(f"{server.url}/api/v1/events", json={"events": [failed_event("ev-fail-0001")]}, headers=device)
    assert r.status_code == 200
    t.join(10)
    assert got and got[0]["kind"] == "camera_failed" and got[0]["subject"] == "gate"
    assert (datetime.now(UTC) - started).total_seconds() < 2  # the product promise: within 2 s


def test_ack_is_audited_and_viewers_cannot(env):
    server, device = env
    httpx.post(f"{server.url}/api/v1/events", json={"events": [failed_event("ev-fail-0002", "door")]}, headers=device)
    with httpx.Client(base_url=server.url) as c:
        login(c, "vic", PASSWORD)
        (alert,) = c.get("/api/v1/alerts", params={"open_only": True}).json()
        me = c.get("/api/v1/me").json()
        r = c.post(f"/api/v1/alerts/{alert['id']}/ack", headers={"X-CSRF-Token": me["csrf_token"]})
        assert r.status_code == 403
    with httpx.Client(base_url=server.url) as c:
        csrf = login(c, "olga")
        r = c.post(f"/api/v1/alerts/{alert['id']}/ack", headers={"X-CSRF-Token": csrf})
        assert r.json()["acknowledged_by"] == "olga"
        assert c.get("/api/v1/alerts", params={"open_only": True}).json() == []
        assert c.get("/api/v1/audit", params={"entity": "alert"}).json()[0]["actor"] == "olga"
