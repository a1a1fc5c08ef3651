"""Dashboard pages over HTTP (no browser): rendering, fragments, escaping, roles, CSRF and the flows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.tables import Role
from tests.conftest import FakeClock
from tests.dashboard.seed import add_alert, seed_penalty
from tests.foundation.helpers import add_user, login, make_settings, operator_app

XSS = '<script>alert("x")</script>'


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, object]]:
    with operator_app(make_settings(tmp_path, sqlite_url), clock) as env:
        yield env


def op_client(env: tuple[TestClient, object]) -> tuple[TestClient, str]:
    client, _ = env
    return client, login(client, "op")


PAGES = ["/dash", "/dash/cameras", "/dash/lists/whitelist", "/dash/lists/blacklist",
         "/dash/penalties", "/dash/reads", "/dash/visits", "/dash/chargers", "/dash/outbox", "/dash/audit"]


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_full_and_as_fragment(env, path: str) -> None:
    client, _ = op_client(env)
    full = client.get(path)
    assert full.status_code == 200, full.text
    assert "<html" in full.text and 'aria-label="Dashboard"' in full.text and "htmx.min.js" in full.text
    frag = client.get(path, headers={"HX-Request": "true"})
    assert frag.status_code == 200
    assert "<html" not in frag.text and "<h1>" in frag.text and "<title>" in frag.text


def test_anonymous_is_sent_to_login(env) -> None:
    client, _ = env
    r = client.get("/dash/cameras", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_static_htmx_and_licence_served(env) -> None:
    client, _ = env
    assert "htmx" in client.get("/static/htmx.min.js").text[:200]
    assert "0BSD" in client.get("/static/THIRD_PARTY.txt").text
    assert "EventSource" in client.get("/static/dash.js").text


def test_overview_counts_cameras_and_escaped_alerts(env, clock: FakeClock) -> None:
    client, settings = env
    csrf = login(client, "op")
    seed_penalty(settings, clock())
    add_alert(settings, clock(), title=XSS, subject="AB123CD")
    assert client.post("/api/v1/cameras", json={"name": "gate", "url": "rtsp://cam/1"},
                       headers={"X-CSRF-Token": csrf}).status_code == 201
    html = client.get("/dash").text
    assert 'id="count-reads">1<' in html and 'id="count-visits">1<' in html and 'id="count-penalties">1<' in html
    assert XSS not in html and "&lt;script&gt;" in html
    assert "gate" in html and "recognition off" in html


def test_camera_form_validates_on_server(env) -> None:
    client, csrf = op_client(env)
    r = client.post("/dash/cameras", data={"csrf_token": csrf, "name": "", "url": "rtsp://", "fps": "99"})
    assert r.status_code == 422
    assert 'id="cam-name-err"' in r.text and 'id="cam-url-err"' in r.text and 'id="cam-fps-err"' in r.text
    assert 'value="rtsp://"' in r.text  # the operator's input is kept
    r = client.post("/dash/cameras", data={"csrf_token": csrf, "name": "gate", "url": "rtsp://cam/1", "fps": "5",
                                           "enabled": "on"})
    assert r.status_code == 303
    assert client.get("/api/v1/cameras/gate").json()["enabled"] is True
    status = client.get("/dash/camera-rows").text  # the polled fragment
    assert "<html" not in status and 'data-camera="gate"' in status
    r = client.post("/dash/cameras", data={"csrf_token": csrf, "name": "gate", "url": "rtsp://cam/2", "fps": "5"})
    assert r.status_code == 422 and "already exists" in r.text
    r = client.post("/dash/recognition/start", data={"csrf_token": csrf})
    assert r.status_code == 422 and "switched off" in r.text  # no camera part in these tests: said plainly


def test_forms_need_csrf_and_operator_role(env) -> None:
    client, settings = env
    login(client, "op")
    r = client.post("/dash/lists/blacklist", data={"plate": "AB123CD"})
    assert r.status_code == 403
    client.cookies.clear()
    csrf = login(client, "view")
    page = client.get("/dash/lists/blacklist").text
    assert "Add to blacklist" not in page and "Import CSV" not in page
    r = client.post("/dash/lists/blacklist", data={"csrf_token": csrf, "plate": "AB123CD"})
    assert r.status_code == 403
    r = client.post("/dash/cameras", data={"csrf_token": csrf, "name": "gate", "url": "rtsp://cam/1"})
    assert r.status_code == 403
    seed_penalty(settings, datetime.now(UTC))
    page = client.get("/dash/penalties").text
    assert "plate unreadable" in page and "Issue notice" not in page
    assert client.get("/dash/audit").status_code == 403 and client.get("/dash/users").status_code == 403
    assert 'href="/dash/audit"' not in page


def test_admin_sees_users_escaped(env) -> None:
    client, settings = env
    add_user(settings, "boss", Role.admin)
    csrf = login(client, "boss")
    r = client.post("/api/v1/users", json={"username": "ann", "full_name": XSS, "role": "viewer",
                                           "password": "long enough pw"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    html = client.get("/dash/users").text
    assert 'href="/dash/users"' in html and "ann" in html and XSS not in html and "&lt;script&gt;" in html
    audit = client.get("/dash/audit?actor=boss").text
    assert "ann" in audit and XSS not in audit


def test_visits_and_chargers(env, clock: FakeClock) -> None:
    client, settings = env
    login(client, "view")
    seed_penalty(settings, clock(), plate="AB123CD")
    html = client.get("/dash/visits?plate=ab123cd").text
    assert "AB123CD" in html and "idle for 30 minutes" in html
    assert "No visits match" in client.get("/dash/visits?bay_id=Z9").text
    chargers = client.get("/dash/chargers").text
    # The empty page says how chargers get here: the relay is off by default, or a CSMS intake.
    assert "No charger has been seen yet" in chargers and "the OCPP relay is off" in chargers
    assert "components.relay: true" in chargers and "/api/v1/csms/events" in chargers


def test_list_add_search_delete_and_escape(env) -> None:
    client, csrf = op_client(env)
    r = client.post("/dash/lists/blacklist", data={"csrf_token": csrf, "plate": "x"})
    assert r.status_code == 422 and 'id="le-plate-err"' in r.text and "2 to 12" in r.text
    r = client.post("/dash/lists/blacklist", data={"csrf_token": csrf, "plate": "ab-123-cd", "owner": XSS,
                                                   "priority": "3"})
    assert r.status_code == 303
    html = client.get("/dash/lists/blacklist?q=AB123").text
    assert "AB123CD" in html and XSS not in html and "&lt;script&gt;" in html
    assert "AB123CD" not in client.get("/dash/lists/whitelist").text
    assert "AB123CD" not in client.get("/dash/lists/blacklist?q=ZZ999").text
    entry = client.get("/api/v1/lists/blacklist").json()[0]
    r = client.post(f"/dash/lists/blacklist/{entry['id']}/delete", data={"csrf_token": csrf})
    assert r.status_code == 303 and client.get("/api/v1/lists/blacklist").json() == []


def test_csv_import_dry_run_then_confirm(env) -> None:
    client, csrf = op_client(env)
    bad = "plate,owner,priority\nAB123CD,Ann,3\nx,Bob,2\nCD456EF,Cy,12\n"
    r = client.post("/dash/lists/whitelist/import", data={"csrf_token": csrf},
                    files={"file": ("w.csv", bad.encode(), "text/csv")})
    assert r.status_code == 200
    assert "<td>3</td><td>plate:" in r.text and "<td>4</td><td>priority:" in r.text
    assert "Confirm import" not in r.text  # all or nothing: errors first
    good = "plate,owner\nAB123CD,<b>Ann</b>\nCD456EF,Cy\n"
    r = client.post("/dash/lists/whitelist/import", data={"csrf_token": csrf},
                    files={"file": ("w.csv", good.encode(), "text/csv")})
    assert "Confirm import of 2 rows" in r.text and "<b>Ann</b>" not in r.text
    assert client.get("/api/v1/lists/whitelist").json() == []
    r = client.post("/dash/lists/whitelist/import", data={"csrf_token": csrf, "confirm": "yes", "csv_text": good})
    assert r.status_code == 303
    assert [e["plate"] for e in client.get("/api/v1/lists/whitelist").json()] == ["AB123CD", "CD456EF"]
    r = client.post("/dash/lists/whitelist/import", data={"csrf_token": csrf},
                    files={"file": ("w.csv", b"name\nx\n", "text/csv")})
    assert r.status_code == 422 and 'id="import-error"' in r.text


def test_penalty_review_issue_and_waive(env, clock: FakeClock) -> None:
    client, settings = env
    csrf = login(client, "op")
    vid = seed_penalty(settings, clock())
    html = client.get("/dash/penalties").text
    assert 'src="/api/v1/evidence/cam1/2026-11-02/crop1.jpg"' in html and "idle for 30 minutes" in html
    assert client.get("/api/v1/evidence/cam1/2026-11-02/crop1.jpg").status_code == 200
    r = client.post(f"/dash/penalties/{vid}/issue", data={"csrf_token": csrf, "plate": ""})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    r = client.post(f"/dash/penalties/{vid}/waive", data={"csrf_token": csrf, "note": ""})
    assert "reason+is+required" in r.headers["location"]
    r = client.post(f"/dash/penalties/{vid}/issue", data={"csrf_token": csrf, "plate": "ab 123 cd"})
    assert r.headers["location"] == "/dash/penalties?msg=Penalty+issued"
    p = client.get("/api/v1/penalties?state=notice_issued").json()[0]
    assert p["plate"] == "AB123CD" and p["needs_review"] is False
    empty = client.get("/dash/penalties").text
    # The review queue is empty, and the page says where the penalty went.
    assert "No penalties are pending review. Elsewhere: 1 notice issued; pick a state above." in empty
    assert ">notice issued (1)</option>" in empty and ">pending review (0)</option>" in empty


def test_reads_filters_and_keyset_pages(env, clock: FakeClock) -> None:
    from datetime import timedelta

    from sqlmodel import Session

    from models.db import make_engine
    from models.tables import PlateReadRow

    client, settings = env
    login(client, "op")
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        for i in range(7):
            db.add(PlateReadRow(at=clock() - timedelta(minutes=i), camera="cam1" if i % 2 else "cam2",
                                plate=f"AB{i:03d}CD", confidence=0.5 + i * 0.05))
        db.commit()
    engine.dispose()
    first = client.get("/dash/reads?limit=3").text
    assert "AB000CD" in first and "AB002CD" in first and "AB003CD" not in first and 'rel="next"' in first
    import re

    nxt = re.search(r'href="(/dash/reads\?[^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = client.get(nxt).text
    assert "AB003CD" in second and "AB005CD" in second and "AB002CD" not in second
    assert "AB000CD" not in client.get("/dash/reads?camera=cam1").text
    hi = client.get("/dash/reads?min_conf=0.75").text
    assert "AB006CD" in hi and "AB004CD" not in hi
    assert client.get("/dash/reads?since=yesterday").status_code == 422


def test_operator_pages_show_times_in_the_sites_zone(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> None:
    # 23:30 UTC on 5 Dec is 00:30 CET on 6 Dec: alerts, the audit log and "today" follow the site's clock.
    clock.now = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
    settings = make_settings(tmp_path, sqlite_url, enforcement={"rules": {"schedule": {"timezone": "Europe/Berlin"}}})
    with operator_app(settings, clock) as env:
        client, _ = op_client(env)
        add_alert(settings, clock(), title="Blacklisted AB123CD", subject="AB123CD")
        html = client.get("/dash").text
        assert ">2026-12-06 00:30:00 CET<" in html and ">2026-12-05 23:30:00<" not in html
        assert "Today (since 2026-12-06 00:00 CET)" in html
        assert "2026-12-06 00:30" in client.get("/dash/audit").text  # the operator's log-in
