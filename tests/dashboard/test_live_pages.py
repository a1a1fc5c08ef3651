"""Overview (bays, polled fragments), list edit/expire (API and pages), visit detail with its timeline picture,
visits filters and keyset pages: over HTTP against the real app (no browser)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from models.settings import Settings
from models.tables import Alert, AuditLog, BayStateRow, Role, VisitRow
from tests.conftest import FakeClock
from tests.dashboard.seed import add_alert, db_session, seed_rich_visit, seed_visit
from tests.foundation.helpers import EDGE_TOKEN, add_user, client_for, login, make_settings, operator_app

XSS = '<script>alert("x")</script>'


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Settings]]:
    with operator_app(make_settings(tmp_path, sqlite_url), clock) as env:
        yield env


def h(csrf: str) -> dict[str, str]:
    return {"X-CSRF-Token": csrf}


# --- overview ---------------------------------------------------------------------------------


def test_overview_bays_live_state_and_polled_fragments(env, clock: FakeClock) -> None:
    client, settings = env
    csrf = login(client, "op")
    for bay in ({"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1},
                {"bay_id": "B2", "charge_point_id": "CP1", "connector_id": 2}, {"bay_id": "B3"}):
        assert client.post("/api/v1/bays", json=bay, headers=h(csrf)).status_code == 201
    now = clock()
    arrived = now - timedelta(minutes=75)
    seed_visit(settings, "B1/p1", "B1", "AB123CD", arrived)
    seed_visit(settings, "B2/p2", "B2", None, now - timedelta(minutes=5))
    with db_session(settings) as db:
        db.add(BayStateRow(bay_id="B1", updated_at=now, state={
            "visit": {"visit_id": "B1/p1", "plate": "AB123CD", "arrived_at": arrived.isoformat()},
            "tx": {"charge_point_id": "CP1", "transaction_id": "T7", "charging": True}}))
        db.add(BayStateRow(bay_id="B2", updated_at=now, state={
            "visit": {"visit_id": "B2/p2", "plate": None, "arrived_at": (now - timedelta(minutes=5)).isoformat()}}))
        db.commit()
    html = client.get("/dash").text
    b1 = re.search(r'<tr data-bay="B1".*?</tr>', html, re.S).group(0)
    assert "AB123CD" in b1 and "charge-charging" in b1 and "tx T7" in b1 and "1 h 15 min" in b1
    assert 'href="/dash/visits/B1/p1"' in b1
    b2 = re.search(r'<tr data-bay="B2".*?</tr>', html, re.S).group(0)
    assert "unknown vehicle" in b2 and "not plugged in" in b2 and 'href="/dash/visits/B2/p2"' in b2
    b3 = re.search(r'<tr data-bay="B3".*?</tr>', html, re.S).group(0)
    assert "free" in b3 and "/dash/visits/" not in b3
    assert 'id="count-cars">2<' in html and 'id="count-visits">2<' in html
    # Every live section polls its own fragment, paused while focus is inside; alerts also on SSE.
    for part in ("counts", "bays", "alerts", "cameras"):
        tag = re.search(rf'<div id="overview-{part}"[^>]*>', html).group(0)
        assert f'hx-get="/dash/overview/{part}"' in tag and 'hx-target="this"' in tag
        assert "every 5s [!document.hidden &amp;&amp; !this.contains(document.activeElement)]" in tag
    assert "bw:alert from:body" in re.search(r'<div id="overview-alerts"[^>]*>', html).group(0)
    # The fragments alone: no layout, fresh data.
    add_alert(settings, now, title=XSS, subject="ZZ999ZZ")
    alerts = client.get("/dash/overview/alerts")
    assert alerts.status_code == 200 and "<html" not in alerts.text and "<h1>" not in alerts.text
    assert "&lt;script&gt;" in alerts.text and XSS not in alerts.text and "Acknowledge" in alerts.text
    assert 'id="count-alerts">1<' in client.get("/dash/overview/counts").text
    bays = client.get("/dash/overview/bays").text
    assert "<html" not in bays and 'data-bay="B1"' in bays and 'hx-target="main"' in bays
    cams = client.get("/dash/overview/cameras").text
    assert "<table" in cams and "No cameras yet" in cams
    assert client.get("/dash/overview/nothing").status_code == 422
    # A viewer sees the same, without the acknowledge button; anonymous gets nothing.
    client.cookies.clear()
    login(client, "view")
    assert "Acknowledge" not in client.get("/dash/overview/alerts").text
    client.cookies.clear()
    assert client.get("/dash/overview/bays").status_code == 401


# --- lists ------------------------------------------------------------------------------------


def test_list_patch_and_expire_api_audited(env, clock: FakeClock) -> None:
    client, _ = env
    csrf = login(client, "op")
    r = client.post("/api/v1/lists/whitelist", json={"plate": "ab 123 cd", "owner": "Ann", "priority": 3},
                    headers=h(csrf))
    assert r.status_code == 201 and r.json()["state"] == "active"
    eid = r.json()["id"]
    until = (clock() + timedelta(days=30)).isoformat()
    r = client.patch(f"/api/v1/lists/whitelist/{eid}", json={"owner": "Ann Fleet", "valid_until": until},
                     headers=h(csrf))
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == "Ann Fleet" and r.json()["priority"] == 3 and r.json()["plate"] == "AB123CD"
    (row,) = client.get("/api/v1/audit", params={"entity": "whitelist"}).json()[:1]
    assert row["action"] == "update" and row["before"]["owner"] == "Ann" and row["after"]["owner"] == "Ann Fleet"
    assert row["before"]["valid_until"] is None and row["after"]["valid_until"].startswith("2026-12-02")
    # Errors name the field; nothing is changed.
    r = client.patch(f"/api/v1/lists/whitelist/{eid}", json={"valid_from": "2027-01-01T00:00:00Z"}, headers=h(csrf))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "valid_until"]
    r = client.patch(f"/api/v1/lists/whitelist/{eid}", json={"valid_from": "2026-01-01T00:00:00"}, headers=h(csrf))
    assert r.status_code == 422 and "time zone" in r.text
    assert client.patch(f"/api/v1/lists/whitelist/{eid}", json={"plate": "X"}, headers=h(csrf)).status_code == 422
    assert client.patch(f"/api/v1/lists/blacklist/{eid}", json={"owner": "x"}, headers=h(csrf)).status_code == 404
    r = client.patch(f"/api/v1/lists/whitelist/{eid}", json={"valid_until": None}, headers=h(csrf))
    assert r.status_code == 200 and r.json()["valid_until"] is None  # null clears
    # Expire now: valid_until = now, audited; a second call changes nothing.
    clock.advance(minutes=1)
    r = client.post(f"/api/v1/lists/whitelist/{eid}/expire", headers=h(csrf))
    assert r.status_code == 200 and r.json()["state"] == "expired"
    assert datetime.fromisoformat(r.json()["valid_until"]) == clock()
    audits = client.get("/api/v1/audit", params={"entity": "whitelist"}).json()
    assert audits[0]["action"] == "expire" and audits[0]["before"]["valid_until"] is None
    assert client.post(f"/api/v1/lists/whitelist/{eid}/expire", headers=h(csrf)).json()["state"] == "expired"
    assert len(client.get("/api/v1/audit", params={"entity": "whitelist"}).json()) == len(audits)
    # An entry that has not started yet cannot be expired (delete it instead).
    later = client.post("/api/v1/lists/whitelist", json={"plate": "CD456EF", "valid_from": "2027-01-01T00:00:00Z"},
                        headers=h(csrf)).json()
    assert later["state"] == "scheduled"
    assert client.post(f"/api/v1/lists/whitelist/{later['id']}/expire", headers=h(csrf)).status_code == 409
    # Status filter.
    assert [e["plate"] for e in client.get("/api/v1/lists/whitelist?status=active").json()] == ["CD456EF"]
    assert [e["plate"] for e in client.get("/api/v1/lists/whitelist?status=expired").json()] == ["AB123CD"]
    assert len(client.get("/api/v1/lists/whitelist").json()) == 2
    # Viewers read but may not change.
    client.cookies.clear()
    vcsrf = login(client, "view")
    assert client.patch(f"/api/v1/lists/whitelist/{eid}", json={"owner": "x"}, headers=h(vcsrf)).status_code == 403
    assert client.post(f"/api/v1/lists/whitelist/{eid}/expire", headers=h(vcsrf)).status_code == 403


def test_list_api_pages_with_cursor_and_search(env) -> None:
    client, _ = env
    csrf = login(client, "op")
    plates = [f"AB{i}00CD" for i in range(7)] + ["ZZ999ZZ"]
    for p in reversed(plates):
        assert client.post("/api/v1/lists/blacklist", json={"plate": p}, headers=h(csrf)).status_code == 201
    seen, url, pages = [], "/api/v1/lists/blacklist?limit=3", 0
    while url:
        r = client.get(url)
        assert r.status_code == 200
        seen += [e["plate"] for e in r.json()]
        pages += 1
        link = r.headers.get("link")
        if link:
            assert r.headers["x-next-cursor"] in link and link.endswith('>; rel="next"') and "limit=3" in link
            url = link[1:link.index(">")]
        else:
            url = ""
    assert seen == sorted(plates) and pages == 3
    r = client.get("/api/v1/lists/blacklist", params={"q": "AB", "limit": 4})
    assert [e["plate"] for e in r.json()] == plates[:4] and "x-next-cursor" in r.headers
    r = client.get("/api/v1/lists/blacklist", params={"q": "AB", "limit": 4, "cursor": r.headers["x-next-cursor"]})
    assert [e["plate"] for e in r.json()] == plates[4:7] and "x-next-cursor" not in r.headers
    assert client.get("/api/v1/lists/blacklist", params={"cursor": "nonsense"}).status_code == 422
    exported = client.get("/api/v1/lists/blacklist/export").text.splitlines()
    assert len(exported) == 9  # the export is still every entry


def test_list_edit_and_expire_pages(env, clock: FakeClock) -> None:
    client, settings = env
    csrf = login(client, "op")
    eid = client.post("/api/v1/lists/blacklist", json={"plate": "BL4CK1", "reason": "stolen", "priority": 8},
                      headers=h(csrf)).json()["id"]
    html = client.get("/dash/lists/blacklist").text
    row = re.search(rf'<tr data-entry="{eid}".*?</tr>', html, re.S).group(0)
    assert f'href="/dash/lists/blacklist/{eid}/edit"' in row and "Expire now" in row and "entry-active" in row
    form = client.get(f"/dash/lists/blacklist/{eid}/edit").text
    assert 'id="ed-reason"' in form and 'value="stolen"' in form and "Add an entry" not in form
    # Server-side errors next to the fields, the operator's input kept.
    r = client.post(f"/dash/lists/blacklist/{eid}/edit", data={
        "csrf_token": csrf, "owner": "", "reason": "stolen car", "priority": "12",
        "valid_from": "2026-12-01T00:00:00Z", "valid_until": "2026-11-01T00:00:00Z"})
    assert r.status_code == 422 and 'id="ed-priority-err"' in r.text and 'value="stolen car"' in r.text
    r = client.post(f"/dash/lists/blacklist/{eid}/edit", data={
        "csrf_token": csrf, "owner": "", "reason": "stolen car", "priority": "9",
        "valid_from": "2026-12-01T00:00:00Z", "valid_until": "2026-11-01T00:00:00Z"})
    assert r.status_code == 422 and 'id="ed-valid_until-err"' in r.text and "after" in r.text
    assert 'aria-describedby="ed-valid_until-err"' in r.text
    r = client.post(f"/dash/lists/blacklist/{eid}/edit", data={
        "csrf_token": csrf, "owner": XSS, "reason": "stolen car", "priority": "9", "valid_from": "",
        "valid_until": ""})
    assert r.status_code == 303 and r.headers["location"] == "/dash/lists/blacklist?msg=BL4CK1+saved"
    entry = client.get("/api/v1/lists/blacklist").json()[0]
    assert entry["reason"] == "stolen car" and entry["priority"] == 9 and entry["owner"] == XSS
    r = client.post(f"/dash/lists/blacklist/{eid}/expire", data={"csrf_token": csrf})
    assert r.status_code == 303 and "BL4CK1+expired" in r.headers["location"]
    html = client.get("/dash/lists/blacklist").text
    row = re.search(rf'<tr data-entry="{eid}".*?</tr>', html, re.S).group(0)
    assert "entry-expired" in row and ">expired</span>" in row and "Expire now" not in row and XSS not in html
    assert "BL4CK1" not in client.get("/dash/lists/blacklist?status=active").text
    assert "BL4CK1" in client.get("/dash/lists/blacklist?status=expired").text
    with db_session(settings) as db:
        actions = [a.action for a in db.exec(select(AuditLog).where(AuditLog.entity == "blacklist"))]
    assert actions == ["create", "update", "expire"]
    later = client.post("/api/v1/lists/blacklist", json={"plate": "L4TER1", "valid_from": "2027-01-01T00:00:00Z"},
                        headers=h(csrf)).json()
    row = re.search(rf'<tr data-entry="{later["id"]}".*?</tr>', client.get("/dash/lists/blacklist").text, re.S)
    assert ">scheduled</span>" in row.group(0) and "Expire now" not in row.group(0)
    r = client.post(f"/dash/lists/blacklist/{later['id']}/expire", data={"csrf_token": csrf})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert 'role="alert">this entry has not started yet' in client.get(r.headers["location"]).text
    # A viewer gets neither the buttons nor the actions.
    client.cookies.clear()
    vcsrf = login(client, "view")
    html = client.get("/dash/lists/blacklist").text
    assert "Expire now" not in html and "/edit" not in html and "BL4CK1" in html
    assert client.get(f"/dash/lists/blacklist/{eid}/edit").status_code == 403
    assert client.post(f"/dash/lists/blacklist/{eid}/expire", data={"csrf_token": vcsrf}).status_code == 403
    assert client.post(f"/dash/lists/blacklist/{eid}/edit", data={"csrf_token": vcsrf, "owner": "x",
                                                                  "priority": "1"}).status_code == 403


def test_expired_entries_no_longer_exempt_or_alert(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> None:
    """Through the real enforcement service: an expired whitelist entry exempts nothing, an expired
    blacklist entry raises no alert, while a live blacklist entry still does."""
    from service.enforcement_control import EnforcementComponent

    settings = make_settings(
        tmp_path, sqlite_url,
        components={"api": True, "scheduler": False, "cameras": False, "relay": False, "enforcement": False},
        cameras=[{"name": "gate", "url": "rtsp://127.0.0.1:1/x", "zones": [
            {"bay_id": b, "polygon": [[0, 0], [10, 0], [10, 10]]} for b in ("B1", "B2", "B3")]}],
        enforcement={"bays": [{"bay_id": "B1"}, {"bay_id": "B2"}, {"bay_id": "B3"}]},
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    with client:
        csrf = login(client, "root")
        token = client.post("/api/v1/tokens", json=EDGE_TOKEN, headers=h(csrf)).json()["token"]
        comp = EnforcementComponent(client.app.state.ctx)
        comp.service = comp._build()
        ids = {}
        for name, plate in (("whitelist", "WH1TE1"), ("blacklist", "BL4CK1"), ("blacklist", "L1VE99")):
            ids[plate] = client.post(f"/api/v1/lists/{name}", json={"plate": plate, "reason": "test"},
                                     headers=h(csrf)).json()["id"]
        assert client.post(f"/api/v1/lists/whitelist/{ids['WH1TE1']}/expire", headers=h(csrf)).status_code == 200
        assert client.post(f"/api/v1/lists/blacklist/{ids['BL4CK1']}/expire", headers=h(csrf)).status_code == 200
        t = clock.advance(minutes=1)
        events = [{"event_id": f"event-arr-{i}", "event": {
            "kind": "vehicle_arrived", "at": t.isoformat(), "presence_id": f"p{i}", "camera": "gate",
            "bay_id": bay, "plate": plate, "confidence": 0.95}}
            for i, (bay, plate) in enumerate((("B1", "WH1TE1"), ("B2", "BL4CK1"), ("B3", "L1VE99")))]
        r = client.post("/api/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        clock.advance(seconds=5)
        comp.drain()
    with db_session(settings) as db:
        visits = {v.plate: v for v in db.exec(select(VisitRow))}
        alerts = [a.subject or a.title for a in db.exec(select(Alert).where(Alert.kind == "blacklist"))]
    assert set(visits) == {"WH1TE1", "BL4CK1", "L1VE99"}
    assert visits["WH1TE1"].exempt is False and visits["BL4CK1"].blacklisted is False
    assert visits["L1VE99"].blacklisted is True
    assert len(alerts) == 1 and "L1VE99" in alerts[0]


# --- visits -----------------------------------------------------------------------------------


def test_visit_detail_timeline_picture_evidence_transaction_penalties(env, clock: FakeClock) -> None:
    client, settings = env
    login(client, "view")
    vid = seed_rich_visit(settings, clock())
    r = client.get(f"/dash/visits/{vid}")
    assert r.status_code == 200, r.text
    html = r.text
    svg = re.search(r"<svg role=\"img\".*?</svg>", html, re.S).group(0)
    segs = re.findall(r'<g class="seg" data-state="(\w+)">\s*<title>[^<]*</title>\s*<rect x="([\d.]+)" y="\d+" '
                      r'width="([\d.]+)"', svg)
    assert [s[0] for s in segs] == ["parked", "charging", "idle", "parked"]
    widths = [float(s[2]) for s in segs]
    assert widths[1] == pytest.approx(3 * widths[0], rel=0.01) and widths[2] == pytest.approx(2 * widths[0], rel=0.01)
    viol = re.search(r'<g class="viol" data-kind="idle">\s*<title>([^<]*)</title>\s*<rect x="([\d.]+)" y="\d+" '
                     r'width="([\d.]+)"', svg)
    assert "idle violation: 08:40 to 08:50" in viol.group(1)
    assert float(viol.group(2)) == pytest.approx(float(segs[2][1]) + widths[0], rel=0.01)  # 10 min into idle
    assert [t for t in re.findall(r'class="tick"[^>]*>([^<]+)<', svg)] == ["07:50", "08:00", "08:30", "08:50", "09:00"]
    assert "charging: 08:00 to 08:30, 30 min" in svg and "<desc" in svg
    assert 'src="/api/v1/evidence/cam1/2026-11-02/crop9.jpg"' in html
    assert 'src="/api/v1/evidence/cam1/2026-11-02/frame9.jpg"' in html
    assert client.get("/api/v1/evidence/cam1/2026-11-02/frame9.jpg").status_code == 200
    assert "T42" in html and "12.35 kWh" in html and "EVDisconnected" in html and "connector 1" in html
    assert 'class="timeline charger-states"' in html and "SuspendedEV" in html
    assert 'href="/dash/penalties?state=violation"' in html and "5.00 EUR" in html
    frag = client.get(f"/dash/visits/{vid}", headers={"HX-Request": "true"}).text
    assert "<html" not in frag and "<svg" in frag
    r = client.get("/dash/visits/B9/none")
    assert r.status_code == 404 and "No such visit" in r.text
    client.cookies.clear()
    assert client.get("/api/v1/evidence/cam1/2026-11-02/frame9.jpg").status_code == 401  # evidence needs a login


def test_open_visit_strip_runs_to_now() -> None:
    from zoneinfo import ZoneInfo

    from api.routes.dash_live import visit_strip

    now = FakeClock()()
    row = VisitRow(visit_id="B1/p1", bay_id="B1", plate=None, arrived_at=now - timedelta(minutes=30),
                   updated_at=now, data={"timeline": [
                       {"at": (now - timedelta(minutes=30)).isoformat(), "what": "arrived", "detail": ""},
                       {"at": (now - timedelta(minutes=20)).isoformat(), "what": "linked", "detail": ""}]})
    strip = visit_strip(row, [], now, ZoneInfo("Europe/Berlin"))
    assert strip.open and [s["state"] for s in strip.segments] == ["parked", "plugged"]
    assert strip.ticks[0]["label"] == "09:30" and strip.ticks[-1]["label"] == "now"  # Berlin is UTC+1 in Nov
    last = strip.segments[-1]
    assert last["x"] + last["w"] == pytest.approx(strip.left + strip.plot_w, abs=0.2)


def test_visits_filters_and_keyset_pages(env, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.routes import dash_live

    client, settings = env
    login(client, "view")
    now = clock()
    for i in range(7):  # one visit a day, the newest still open
        seed_visit(settings, f"B{1 + i % 2}/p{i}", f"B{1 + i % 2}", f"AB{i}00CD", now - timedelta(days=i),
                   departed=None if i == 0 else now - timedelta(days=i) + timedelta(hours=1))
    seen, url = [], "/api/v1/visits?limit=3"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        seen += [v["plate"] for v in r.json()]
        url = r.headers["link"][1:r.headers["link"].index(">")] if "link" in r.headers else ""
    assert seen == [f"AB{i}00CD" for i in range(7)]
    r = client.get("/api/v1/visits", params={"bay_id": "B1", "limit": 2})
    assert [v["plate"] for v in r.json()] == ["AB000CD", "AB200CD"]
    r = client.get("/api/v1/visits", params={"bay_id": "B1", "limit": 2, "cursor": r.headers["x-next-cursor"]})
    assert [v["plate"] for v in r.json()] == ["AB400CD", "AB600CD"] and "x-next-cursor" not in r.headers
    since, until = (now - timedelta(days=3, hours=1)).isoformat(), (now - timedelta(days=1, hours=1)).isoformat()
    assert [v["plate"] for v in client.get("/api/v1/visits", params={"since": since, "until": until}).json()] == [
        "AB200CD", "AB300CD"]
    assert [v["plate"] for v in client.get("/api/v1/visits?open_only=true").json()] == ["AB000CD"]
    assert [v["plate"] for v in client.get("/api/v1/visits?plate=ab-300-cd").json()] == ["AB300CD"]
    assert client.get("/api/v1/visits?cursor=abc").status_code == 422
    # The page: same filters, pages of VISIT_PAGE.
    monkeypatch.setattr(dash_live, "VISIT_PAGE", 3)
    first = client.get("/dash/visits").text
    assert re.findall(r'data-visit="([^"]+)"', first) == ["B1/p0", "B2/p1", "B1/p2"] and 'rel="next"' in first
    assert 'href="/dash/visits/B1/p0"' in first
    nxt = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    second = client.get(nxt).text
    assert re.findall(r'data-visit="([^"]+)"', second) == ["B2/p3", "B1/p4", "B2/p5"]
    assert "Newest visits" in second
    day = lambda n: (now - timedelta(days=n)).date().isoformat()  # noqa: E731
    ranged = client.get(f"/dash/visits?since={day(4)}&until={day(2)}&bay_id=B2").text
    assert re.findall(r'data-visit="([^"]+)"', ranged) == ["B2/p3"]
    assert re.findall(r'data-visit="([^"]+)"', client.get("/dash/visits?open_only=true").text) == ["B1/p0"]
    bad = client.get("/dash/visits?since=yesterday")
    assert bad.status_code == 422 and 'id="vf-since-err"' in bad.text
    bad = client.get(f"/dash/visits?since={day(1)}&until={day(3)}")
    assert bad.status_code == 422 and 'id="vf-until-err"' in bad.text
