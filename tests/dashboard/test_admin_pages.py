"""Admin and figures pages over HTTP: users and roles, the outbox with resend, occupancy charts, about;
and the pure occupancy/idle computation behind the charts (table-driven)."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from anpr.train import DEFAULT_ONNX
from api.routes.stats import METRICS_FILE as METRICS
from api.stats import VisitSpan, bay_days
from models.db import make_engine
from models.outbox import OutboxChannel, OutboxMessage, OutboxState
from models.settings import Settings
from models.tables import AuditLog, Role, VisitRow
from tests.conftest import FakeClock
from tests.foundation.helpers import PASSWORD, add_user, client_for, login, make_settings

NEW_PW = "a brand new password"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(tmp_path, sqlite_url)
    client = client_for(settings, clock=clock)
    add_user(settings, "boss", Role.admin)
    add_user(settings, "op", Role.operator)
    add_user(settings, "view", Role.viewer)
    with client:
        yield client, settings


@contextmanager
def db_session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as db:
            yield db
    finally:
        engine.dispose()


def users_by_name(client: TestClient) -> dict[str, dict[str, Any]]:
    return {u["username"]: u for u in client.get("/api/v1/users").json()}


def audit_rows(settings: Settings, entity: str) -> list[AuditLog]:
    with db_session(settings) as db:
        return list(db.exec(select(AuditLog).where(AuditLog.entity == entity).order_by(AuditLog.id)))


# --- users and roles ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dash/users", "/dash/charts", "/dash/about", "/dash/outbox"])
def test_new_pages_render_full_and_as_fragment(env, path: str) -> None:
    client, _ = env
    login(client, "boss")
    full = client.get(path)
    assert full.status_code == 200, full.text
    assert "<html" in full.text and 'aria-label="Dashboard"' in full.text
    frag = client.get(path, headers={"HX-Request": "true"})
    assert frag.status_code == 200 and "<html" not in frag.text and "<h1>" in frag.text


def test_users_crud_from_the_page(env) -> None:
    client, settings = env
    csrf = login(client, "boss")
    page = client.get("/dash/users").text
    assert "Add a user" in page and 'id="nu-username"' in page and "Switch user" in page

    r = client.post("/dash/users", data={"csrf_token": csrf, "username": "ann", "full_name": "Ann Example",
                                         "email": "ann@example.com", "role": "operator", "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"].startswith("/dash/users?msg=User+ann+created")
    ann = users_by_name(client)["ann"]
    assert (ann["role"], ann["email"], ann["full_name"], ann["is_active"]) == \
        ("operator", "ann@example.com", "Ann Example", True)
    assert 'data-user="ann"' in client.get("/dash/users").text

    # Edit: role, name, e-mail cleared, deactivated (the checkbox left out).
    r = client.post(f"/dash/users/{ann['id']}", data={"csrf_token": csrf, "full_name": "Ann E.", "email": "",
                                                      "role": "viewer"})
    assert r.status_code == 303, r.text
    ann = users_by_name(client)["ann"]
    assert (ann["role"], ann["email"], ann["full_name"], ann["is_active"]) == ("viewer", None, "Ann E.", False)
    r = client.post(f"/dash/users/{ann['id']}", data={"csrf_token": csrf, "full_name": "Ann E.", "role": "viewer",
                                                      "is_active": "on"})
    assert r.status_code == 303 and users_by_name(client)["ann"]["is_active"] is True

    # Reset password: too short is an error next to that user's field; then the new one works.
    r = client.post(f"/dash/users/{ann['id']}/password", data={"csrf_token": csrf, "password": "short"})
    assert r.status_code == 422 and f'id="u-{ann["id"]}-password-err"' in r.text and "at least 10" in r.text
    assert re.search(r'<details open>\s*<summary>Edit<span class="sr"> ann', r.text)  # that user's form is open
    r = client.post(f"/dash/users/{ann['id']}/password", data={"csrf_token": csrf, "password": NEW_PW})
    assert r.status_code == 303 and "Password+of+ann+reset" in r.headers["location"]
    other = TestClient(client.app, follow_redirects=False)
    login(other, "ann", NEW_PW)

    r = client.post(f"/dash/users/{ann['id']}/delete", data={"csrf_token": csrf})
    assert r.status_code == 303 and "User+ann+deleted" in r.headers["location"]
    assert "ann" not in users_by_name(client)
    actions = [(a.actor, a.action) for a in audit_rows(settings, "user") if a.entity_id == ann["id"]]
    assert actions[0] == ("boss", "create") and ("boss", "delete") in actions
    assert actions.count(("boss", "update")) == 3  # edit, re-activate, password; nothing for the 422
    pw_change = [a for a in audit_rows(settings, "user") if a.after and a.after.get("password") == "changed"]
    assert len(pw_change) == 1 and NEW_PW not in str(pw_change[0].after)


def test_users_page_is_for_admins_only(env) -> None:
    client, _ = env
    for name in ("view", "op"):
        client.cookies.clear()
        csrf = login(client, name)
        assert client.get("/dash/users").status_code == 403
        r = client.post("/dash/users", data={"csrf_token": csrf, "username": "eve", "role": "admin",
                                             "password": PASSWORD})
        assert r.status_code == 403
        assert 'href="/dash/users"' not in client.get("/dash").text
    client.cookies.clear()
    login(client, "boss")
    assert "eve" not in users_by_name(client)


def test_create_user_errors_are_shown_next_to_the_field(env) -> None:
    client, _ = env
    csrf = login(client, "boss")
    r = client.post("/dash/users", data={"csrf_token": csrf, "username": "x y", "full_name": "<b>X</b>",
                                         "email": "not-an-address", "role": "viewer", "password": "short pw"})
    assert r.status_code == 422
    for field in ("username", "email", "password"):
        assert f'id="nu-{field}-err"' in r.text, field
        assert f'id="nu-{field}" name="{field}"' in r.text
    assert 'aria-describedby="nu-email-err"' in r.text
    assert 'value="x y"' in r.text and "&lt;b&gt;X&lt;/b&gt;" in r.text  # input kept, escaped
    assert "short pw" not in r.text  # a password is never echoed
    r = client.post("/dash/users", data={"csrf_token": csrf, "username": "op", "role": "viewer",
                                         "password": PASSWORD})
    assert r.status_code == 422
    assert re.search(r'id="nu-username-err">[^<]*already taken', r.text)
    r = client.post("/dash/users", data={"username": "zed", "role": "viewer", "password": PASSWORD})
    assert r.status_code == 403  # no CSRF token


def test_last_admin_cannot_demote_deactivate_or_delete_themselves(env) -> None:
    client, _ = env
    csrf = login(client, "boss")
    boss = users_by_name(client)["boss"]
    r = client.post(f"/dash/users/{boss['id']}", data={"csrf_token": csrf, "role": "operator", "is_active": "on"})
    assert r.status_code == 422
    assert re.search(rf'id="u-{boss["id"]}-role-err">[^<]*last active admin', r.text)
    r = client.post(f"/dash/users/{boss['id']}", data={"csrf_token": csrf, "role": "admin"})  # unticked: deactivate
    assert r.status_code == 422
    assert re.search(rf'id="u-{boss["id"]}-is_active-err">[^<]*last active admin', r.text)
    r = client.post(f"/dash/users/{boss['id']}/delete", data={"csrf_token": csrf})
    assert r.status_code == 422 and "cannot delete your own account" in r.text
    assert f'action="/dash/users/{boss["id"]}/delete"' not in r.text  # no delete button for oneself
    # The JSON API has the same guard; an explicit null changes nothing instead of dodging it.
    headers = {"X-CSRF-Token": csrf}
    assert client.patch(f"/api/v1/users/{boss['id']}", json={"role": "viewer"}, headers=headers).status_code == 409
    assert client.patch(f"/api/v1/users/{boss['id']}", json={"is_active": False}, headers=headers).status_code == 409
    r = client.patch(f"/api/v1/users/{boss['id']}", json={"role": None, "is_active": None}, headers=headers)
    assert r.status_code == 200 and (r.json()["role"], r.json()["is_active"]) == ("admin", True)

    # With a second admin, stepping down is allowed, and the page sends the ex-admin where they may go.
    r = client.post("/dash/users", data={"csrf_token": csrf, "username": "boss2", "role": "admin",
                                         "password": PASSWORD})
    assert r.status_code == 303
    r = client.post(f"/dash/users/{boss['id']}", data={"csrf_token": csrf, "role": "operator", "is_active": "on"})
    assert r.status_code == 303 and r.headers["location"] == "/dash"
    assert client.get("/dash/users").status_code == 403
    client.cookies.clear()
    csrf = login(client, "boss2")
    boss2 = users_by_name(client)["boss2"]
    r = client.post(f"/dash/users/{boss2['id']}", data={"csrf_token": csrf, "role": "viewer", "is_active": "on"})
    assert r.status_code == 422 and "last active admin" in r.text


def test_switch_user_logs_out_and_keeps_next(env) -> None:
    client, settings = env
    csrf = login(client, "boss")
    r = client.post("/dash/switch-user", data={"csrf_token": csrf, "next": "/dash/users"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fdash%2Fusers"
    assert client.get("/api/v1/me").status_code == 401  # the session row is gone, not just the cookie
    assert 'name="next" value="/dash/users"' in client.get(r.headers["location"]).text
    assert any(a.action == "logout" and a.actor == "boss" for a in audit_rows(settings, "user"))
    csrf = login(client, "view")
    r = client.post("/dash/switch-user", data={"csrf_token": csrf, "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F"


# --- outbox ---------------------------------------------------------------------------------


def seed_outbox(settings: Settings, now: datetime, states: list[OutboxState]) -> list[str]:
    ids = []
    with db_session(settings) as db:
        for i, state in enumerate(states):
            row = OutboxMessage(idempotency_key=f"k{i}", channel=OutboxChannel.email, recipient=f"d{i}@example.com",
                                subject=f"Notice {i}", template="test_email", state=state,
                                attempts=5 if state == OutboxState.dead else 1,
                                last_error="550 mailbox unavailable" if state != OutboxState.sent else None,
                                created_at=now - timedelta(minutes=i), updated_at=now - timedelta(minutes=i))
            db.add(row)
            ids.append(row.id)
        db.commit()
    return ids


def test_outbox_counts_filter_and_resend_of_a_dead_letter(env, clock: FakeClock) -> None:
    client, settings = env
    dead, failed, sent, pending = seed_outbox(settings, clock(), [OutboxState.dead, OutboxState.failed,
                                                                  OutboxState.sent, OutboxState.pending])
    csrf = login(client, "op")
    html = client.get("/dash/outbox").text
    for state, n in (("dead", 1), ("failed", 1), ("sent", 1), ("pending", 1), ("sending", 0)):
        assert f'id="count-{state}">{n}<' in html
    assert html.count('action="/dash/outbox/') == 2  # resend only for failed and dead rows
    assert f'action="/dash/outbox/{sent}/resend"' not in html

    only_dead = client.get("/dash/outbox?state=dead").text
    assert f'data-message="{dead}"' in only_dead and f'data-message="{failed}"' not in only_dead
    assert "No sending messages." in client.get("/dash/outbox?state=sending").text

    r = client.post(f"/dash/outbox/{dead}/resend", data={"csrf_token": csrf, "state": "dead"})
    assert r.status_code == 303 and r.headers["location"].startswith("/dash/outbox?state=dead&msg=")
    with db_session(settings) as db:
        row = db.get(OutboxMessage, dead)
        assert row is not None and (row.state, row.attempts) == (OutboxState.pending, 0)
    audit = [a for a in audit_rows(settings, "outbox") if a.entity_id == dead]
    assert [(a.actor, a.action) for a in audit] == [("op", "resend")]
    assert 'id="count-dead">0<' in client.get("/dash/outbox").text
    assert "No dead letters." in client.get("/dash/outbox?state=dead").text

    r = client.post(f"/dash/outbox/{sent}/resend", data={"csrf_token": csrf})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert "only dead or failed" in client.get(r.headers["location"]).text
    assert pending  # untouched

    client.cookies.clear()
    csrf = login(client, "view")
    assert client.get("/dash/outbox").status_code == 403
    assert client.post(f"/dash/outbox/{failed}/resend", data={"csrf_token": csrf}).status_code == 403


def test_outbox_pages_through_older_messages(env, clock: FakeClock) -> None:
    client, settings = env
    seed_outbox(settings, clock(), [OutboxState.sent] * 55)
    login(client, "op")
    first = client.get("/dash/outbox").text
    assert first.count("data-message=") == 50 and 'rel="next"' in first and 'rel="prev"' not in first
    second = client.get("/dash/outbox?offset=50").text
    assert second.count("data-message=") == 5 and 'rel="prev"' in second and 'rel="next"' not in second
    assert "Notice 54" in second and "Notice 54" not in first  # oldest last


# --- occupancy and idle: the pure computation --------------------------------------------------

D1, D2 = date(2026, 11, 1), date(2026, 11, 2)
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # the day's elapsed span: 540 min


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=UTC)


def visit(bay: str, start: datetime, end: datetime | None, *timeline: tuple[str, datetime]) -> VisitSpan:
    return VisitSpan(bay_id=bay, arrived_at=start, departed_at=end,
                     timeline=tuple({"at": t.isoformat(), "what": w, "detail": ""} for w, t in timeline))


STATS_CASES = [
    pytest.param([visit("B1", at(D1, 22), at(D2, 2))], "UTC", NOW, 2,
                 {("B1", D1): (120, 0, 1), ("B1", D2): (120, 0, 1)}, id="visit-across-midnight"),
    pytest.param([visit("B1", at(D1, 22, 30), at(D1, 23, 30))], "Europe/Berlin", NOW, 2,
                 {("B1", D1): (30, 0, 1), ("B1", D2): (30, 0, 1)}, id="local-midnight-berlin"),
    pytest.param([visit("B1", at(D2, 7), None)], "UTC", NOW, 1, {("B1", D2): (120, 0, 1)}, id="open-visit-until-now"),
    pytest.param([visit("B1", at(D1, 0), at(D1, 6), ("arrived", at(D1, 0)), ("linked", at(D1, 0, 10)),
                        ("charging", at(D1, 0, 10)), ("idle", at(D1, 2)), ("charging", at(D1, 2, 30)),
                        ("idle", at(D1, 3)), ("idle_end", at(D1, 6)), ("departed", at(D1, 6)))],
                 "UTC", NOW, 2, {("B1", D1): (360, 210, 1), ("B1", D2): (0, 0, 0)}, id="idle-episodes"),
    pytest.param([visit("B1", at(D1, 1), at(D1, 3), ("linked", at(D1, 1)), ("charging", at(D1, 1)),
                        ("unplugged", at(D1, 2)), ("departed", at(D1, 3)))],
                 "UTC", NOW, 2, {("B1", D1): (120, 60, 1)}, id="parked-after-unplug"),
    pytest.param([visit("B1", at(D1, 1), at(D1, 3), ("unplugged", at(D1, 2)))],
                 "UTC", NOW, 2, {("B1", D1): (120, 0, 1)}, id="no-session-no-idle"),
    pytest.param([visit("B1", at(D1, 22), at(D2, 2), ("linked", at(D1, 22)), ("idle", at(D1, 23)),
                        ("departed", at(D2, 2)))],
                 "UTC", NOW, 2, {("B1", D1): (120, 60, 1), ("B1", D2): (120, 120, 1)}, id="idle-across-midnight"),
    pytest.param([visit("B1", at(D2, 6), None, ("linked", at(D2, 6)), ("idle", at(D2, 8)))],
                 "UTC", NOW, 1, {("B1", D2): (180, 60, 1)}, id="open-visit-idle-until-now"),
    pytest.param([visit("B1", at(D1, 1), at(D1, 3)), visit("B1", at(D1, 2), at(D1, 4)), visit("B2", at(D1, 1), None)],
                 "UTC", NOW, 2, {("B1", D1): (180, 0, 2), ("B2", D1): (1380, 0, 1), ("B2", D2): (540, 0, 1)},
                 id="overlapping-visits-counted-once"),
    pytest.param([visit("B1", at(D2, 10), None)], "UTC", NOW, 1, {("B1", D2): (0, 0, 0)}, id="future-arrival-ignored"),
]


@pytest.mark.parametrize("visits,zone,now,days,expected", STATS_CASES)
def test_bay_day_minutes(visits: list[VisitSpan], zone: str, now: datetime, days: int,
                         expected: dict[tuple[str, date], tuple[float, float, int]]) -> None:
    result = bay_days(visits, now=now, tz=ZoneInfo(zone), days=days, bays=["B9"])
    assert [r.day for r in result["B9"]] == [D2 - timedelta(days=n) for n in range(days - 1, -1, -1)]
    assert all(r.occupied_min == 0 for r in result["B9"])  # a known bay without visits has zero rows
    got = {(bay, r.day): (round(r.occupied_min, 3), round(r.idle_min, 3), r.visits)
           for bay, rows in result.items() for r in rows}
    for key, want in expected.items():
        assert got[key] == want, key


def test_today_is_a_share_of_the_elapsed_day_and_dst_days_have_25_hours() -> None:
    today = bay_days([visit("B1", at(D2, 0), None)], now=NOW, tz=ZoneInfo("UTC"), days=1)["B1"][0]
    assert (today.span_min, today.occupancy_pct) == (540, 100.0)
    berlin = ZoneInfo("Europe/Berlin")
    autumn = bay_days([], now=datetime(2026, 10, 26, 12, tzinfo=UTC), tz=berlin, days=2, bays=["B1"])["B1"]
    assert (autumn[0].day, autumn[0].span_min) == (date(2026, 10, 25), 25 * 60)


# --- stats API and the charts page --------------------------------------------------------------


def seed_visits(settings: Settings, now: datetime) -> None:
    yday = now - timedelta(days=1)
    y12 = yday.replace(hour=12, minute=0)
    with db_session(settings) as db:
        timeline = [{"at": y12.isoformat(), "what": "arrived", "detail": ""},
                    {"at": (y12 + timedelta(minutes=5)).isoformat(), "what": "linked", "detail": ""},
                    {"at": (y12 + timedelta(hours=4)).isoformat(), "what": "idle", "detail": "SuspendedEV"},
                    {"at": (y12 + timedelta(hours=6)).isoformat(), "what": "departed", "detail": "camera"}]
        db.add(VisitRow(visit_id="B1/p1", bay_id="B1", arrived_at=y12, departed_at=y12 + timedelta(hours=6),
                        updated_at=now, data={"timeline": timeline}))
        db.add(VisitRow(visit_id="B2/p2", bay_id="B2", arrived_at=now - timedelta(hours=3), updated_at=now,
                        data={"timeline": []}))
        db.commit()


def test_stats_api(env, clock: FakeClock) -> None:
    client, settings = env
    seed_visits(settings, clock())
    assert client.get("/api/v1/stats/bays").status_code == 401
    login(client, "view")
    body = client.get("/api/v1/stats/bays?days=2").json()
    assert body["timezone"] == "UTC" and body["days"] == 2
    bays = {b["bay_id"]: b for b in body["bays"]}
    assert [d["date"] for d in bays["B1"]["days"]] == ["2026-11-01", "2026-11-02"]
    y = bays["B1"]["days"][0]
    assert (y["occupied_min"], y["idle_min"], y["occupancy_pct"], y["visits"]) == (360, 120, 25.0, 1)
    assert bays["B2"]["days"][1]["occupied_min"] == 180 and bays["B2"]["days"][1]["span_min"] == 540
    only = client.get("/api/v1/stats/bays?days=1&bay_id=B2").json()["bays"]
    assert [b["bay_id"] for b in only] == ["B2"]
    assert client.get("/api/v1/stats/bays?days=0").status_code == 422
    assert client.get("/api/v1/stats/bays?days=91").status_code == 422


def test_stats_use_the_site_schedule_time_zone(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> None:
    settings = make_settings(tmp_path, sqlite_url,
                             enforcement={"rules": {"schedule": {"timezone": "Europe/Berlin"}}})
    client = client_for(settings, clock=clock)  # migrates the database, so users can be added
    add_user(settings, "view", Role.viewer)
    with client:
        login(client, "view")
        assert client.get("/api/v1/stats/bays?days=1").json()["timezone"] == "Europe/Berlin"


def chart_svgs(html: str) -> dict[str, ET.Element]:
    out = {}
    for m in re.finditer(r'<figure style="margin:0" data-bay="([^"]+)">.*?(<svg class="bay-chart".*?</svg>)', html,
                         re.S):
        out[m.group(1)] = ET.fromstring(m.group(2))
    return out


def test_chart_page_draws_bars_for_seeded_visits(env, clock: FakeClock) -> None:
    client, settings = env
    seed_visits(settings, clock())
    login(client, "view")
    html = client.get("/dash/charts?days=2").text
    svgs = chart_svgs(html)
    assert set(svgs) == {"B1", "B2"}
    b1 = svgs["B1"]
    assert b1.get("role") == "img" and b1.find(f"{SVG}title") is not None and b1.find(f"{SVG}desc") is not None
    bars = {g.get("data-day"): g for g in b1.iter(f"{SVG}g") if g.get("class") == "bar"}
    assert list(bars) == ["2026-11-01", "2026-11-02"]
    yday = bars["2026-11-01"]
    occ = [r for r in yday.iter(f"{SVG}rect") if r.get("class") == "bar-occ"]
    idle = [r for r in yday.iter(f"{SVG}rect") if r.get("class") == "bar-idle"]
    assert float(occ[0].get("height")) == pytest.approx(140 * 0.25, abs=0.1)  # 6 h of 24
    assert float(idle[0].get("height")) == pytest.approx(140 * 2 / 24, abs=0.1)  # 2 h idle
    assert float(idle[0].get("y")) == pytest.approx(float(occ[0].get("y")))  # idle is the top of the bar
    title = yday.find(f"{SVG}title").text
    assert "occupied 6 h 00 min (25 %)" in title and "idle 2 h 00 min (8 %)" in title and "1 visit" in title
    assert not [r for r in bars["2026-11-02"].iter(f"{SVG}rect") if r.get("class")]  # B1 empty today
    axis_text = [t.text for t in b1.iter(f"{SVG}text")]
    assert "100 %" in axis_text and "share of the day" in axis_text and "day (UTC)" in axis_text
    b2_today = next(g for g in svgs["B2"].iter(f"{SVG}g") if g.get("data-day") == "2026-11-02")
    assert "occupied 3 h 00 min (33 %)" in b2_today.find(f"{SVG}title").text
    # The text alternative: the same figures as a table.
    row = re.search(r'<tr data-bay="B1" data-day="2026-11-01">(.*?)</tr>', html, re.S).group(1)
    assert "6 h 00 min" in row and "25 %" in row and "2 h 00 min" in row
    one = chart_svgs(client.get("/dash/charts?days=7&bay_id=B2").text)
    assert list(one) == ["B2"] and len([g for g in one["B2"].iter(f"{SVG}g") if g.get("class") == "bar"]) == 7


# --- about ----------------------------------------------------------------------------------


def test_about_page_and_api_show_version_model_and_metrics(env) -> None:
    client, _ = env
    login(client, "view")
    sha = hashlib.sha256(DEFAULT_ONNX.read_bytes()).hexdigest()
    html = client.get("/dash/about").text
    assert 'id="about-version">0.1.0<' in html
    mib = f"{DEFAULT_ONNX.stat().st_size / 2**20:.1f} MiB"  # 10.6 for the committed detector
    assert "plate_detector.onnx" in html and sha[:12] in html and mib in html
    assert re.search(r'id="about-ocr">ensemble<', html) and re.search(r'id="about-region">generic<', html)
    metrics = json.loads(METRICS.read_text())
    for r in metrics["results"]:  # every measured row is shown, the configured reader marked in use
        row = re.search(rf'<tr data-ocr="{r["ocr"]}" data-dataset="{re.escape(r["dataset"])}" '
                        rf'data-region="{r["region"]}">(.*?)</tr>', html, re.S).group(1)
        exact = r["exact_plate_accuracy"]  # None: a detection-only set (no plate texts)
        assert (f"{exact:.3f}" if exact is not None else f'{r["detection_recall"]:.3f}</td>') in row
        assert ("in use" in row) == (r["ocr"] == "ensemble" and r["region"] == "generic")
        assert r["command"] in html
    assert metrics["measured_on"] in html
    body = client.get("/api/v1/about").json()
    assert body["version"] == "0.1.0" and body["ocr"] == "ensemble" and body["region"] == "generic"
    assert body["detector"] == {"backend": "onnx", "file": "plate_detector.onnx", "present": True,
                                "size_bytes": DEFAULT_ONNX.stat().st_size, "sha256": sha}
    assert body["metrics"]["results"] == metrics["results"]
