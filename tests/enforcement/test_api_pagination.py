"""Keyset pages of the JSON list endpoints: penalties, access log, vehicles and transactions (visits and lists:
tests/dashboard/test_live_pages.py). Every page walk follows the `Link: <...>; rel="next"` header, over HTTP
against the real app on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.pagination import encode_cursor
from models.db import make_engine
from models.settings import Settings
from models.tables import AccessLog, Penalty, Transaction, Vehicle
from tests.conftest import FakeClock
from tests.foundation.helpers import login, make_settings, operator_app


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Settings]]:
    with operator_app(make_settings(tmp_path, sqlite_url), clock) as env:
        yield env


def add(settings: Settings, *rows: Any) -> None:
    engine = make_engine(settings.db_url)
    with Session(engine, expire_on_commit=False) as db:  # the test reads the seeded rows afterwards
        db.add_all(rows)
        db.commit()
    engine.dispose()


def walk(client: TestClient, url: str, params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
    """All pages of a list, following `Link` (checked against `X-Next-Cursor`) until it is absent."""
    pages = []
    r = client.get(url, params=params)
    while True:
        assert r.status_code == 200, r.text
        pages.append(r.json())
        link = r.headers.get("link")
        if link is None:
            assert "x-next-cursor" not in r.headers
            return pages
        assert link.startswith("</api/v1/") and link.endswith('>; rel="next"')
        assert f"cursor={r.headers['x-next-cursor']}" in link
        r = client.get(link[1:link.index(">")])


def next_link(r: Any) -> str:
    return r.headers["link"][1:r.headers["link"].index(">")]


def assert_bad_cursors(client: TestClient, url: str, wrong: list[str]) -> None:
    for cursor in ["abc", "!!!", "e30", encode_cursor(), *wrong]:
        r = client.get(url, params={"cursor": cursor})
        assert r.status_code == 422, (cursor, r.text)
        assert "not a cursor from this API" in r.json()["detail"][0]["msg"]
    assert client.get(url, params={"cursor": "x" * 401}).status_code == 422


# --- penalties --------------------------------------------------------------------------------


def penalty(i: int, now: datetime, *, started: datetime | None = None, state: str = "pending_review") -> Penalty:
    bay, kind = f"B{1 + i % 2}", "idle" if i % 3 else "overstay"
    return Penalty(violation_id=f"{bay}/p{i:02d}/{kind}", visit_id=f"{bay}/p{i:02d}", bay_id=bay, kind=kind,
                   plate=f"AB{i:02d}CD",
                   started_at=started or now - timedelta(hours=i // 2), amount="5.00", state=state,
                   created_at=now, updated_at=now)


def test_penalties_keyset_pages_filters_and_stable_order(env, clock: FakeClock) -> None:
    client, settings = env
    now = clock()
    seeded = [penalty(i, now) for i in range(12)]  # two penalties share each start time: ties by violation id
    add(settings, *seeded)
    expected = [p.violation_id for p in sorted(seeded, key=lambda p: (p.started_at, p.violation_id), reverse=True)]
    csrf = login(client, "view")
    pages = walk(client, "/api/v1/penalties", {"limit": 5})
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [p["violation_id"] for page in pages for p in page] == expected
    # A new penalty and a state change between two page fetches: later pages neither repeat nor skip a row.
    r = client.post(f"/api/v1/penalties/{expected[0]}/waive", json={"note": "x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403  # viewers read, never write
    first = client.get("/api/v1/penalties", params={"limit": 5})
    add(settings, penalty(99, now, started=now + timedelta(minutes=5)))
    client.cookies.clear()
    h = {"X-CSRF-Token": login(client, "op")}
    clock.advance(minutes=1)
    moved = expected[7]  # on the second page: its updated_at is now the newest of all
    assert client.post(f"/api/v1/penalties/{moved}/waive", json={"note": "charger fault"}, headers=h).status_code == 200
    second = client.get(next_link(first))
    third = client.get(next_link(second))
    assert [p["violation_id"] for r in (first, second, third) for p in r.json()] == expected
    assert "link" not in third.headers
    assert client.get("/api/v1/penalties", params={"limit": 1}).json()[0]["violation_id"] == "B2/p99/overstay"
    # Filters, alone and together; the Link keeps them.
    assert {p["bay_id"] for p in client.get("/api/v1/penalties", params={"bay_id": "B1"}).json()} == {"B1"}
    overstay = client.get("/api/v1/penalties", params={"kind": "overstay"}).json()
    assert [p["violation_id"] for p in overstay] == ["B2/p99/overstay", "B1/p00/overstay", "B2/p03/overstay",
                                                    "B1/p06/overstay", "B2/p09/overstay"]
    r = client.get("/api/v1/penalties", params={"kind": "idle", "bay_id": "B2", "limit": 2})
    assert "kind=idle" in r.headers["link"] and "bay_id=B2" in r.headers["link"]
    assert [p["violation_id"] for page in walk(client, next_link(r)) for p in page] == ["B2/p07/idle", "B2/p11/idle"]
    assert [p["violation_id"] for p in r.json()] == ["B2/p01/idle", "B2/p05/idle"]
    assert [p["violation_id"] for p in client.get("/api/v1/penalties?plate=ab-04 cd").json()] == ["B1/p04/idle"]
    assert [p["violation_id"] for p in client.get("/api/v1/penalties?state=waived").json()] == [moved]
    since, until = (now - timedelta(hours=2)).isoformat(), (now - timedelta(hours=1)).isoformat()
    window = client.get("/api/v1/penalties", params={"since": since, "until": until}).json()
    assert [p["violation_id"] for p in window] == ["B2/p05/idle", "B1/p04/idle"]
    naive = (now - timedelta(hours=1)).replace(tzinfo=None).isoformat()  # no zone: UTC
    assert len(client.get("/api/v1/penalties", params={"since": naive}).json()) == 5
    assert_bad_cursors(client, "/api/v1/penalties", [encode_cursor("yesterday", "B1/p01/idle"),
                                                     encode_cursor(now, 7), encode_cursor(now, "x", "y")])
    assert client.get("/api/v1/penalties", params={"limit": 501}).status_code == 422
    # The dashboard's review page calls list_penalties directly: still the first page, newest start first.
    from api.routes import enforcement as enf_api

    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        rows = enf_api.list_penalties(db, None, state="pending_review", plate=None, limit=3)
        assert [p.violation_id for p in rows] == ["B2/p99/overstay", expected[0], expected[1]]
    engine.dispose()


# --- access log -------------------------------------------------------------------------------


def test_access_log_keyset_pages_and_filters(env, clock: FakeClock) -> None:
    client, settings = env
    now = clock()
    add(settings, *[AccessLog(at=now - timedelta(minutes=30 - i), bay_id=f"G{1 + i % 2}", presence_id=f"p{i}",
                              plate=f"GT{i:02d}AA", accepted=i % 3 != 0, reason="whitelist" if i % 3 else "unknown")
                    for i in range(11)])
    login(client, "view")
    pages = walk(client, "/api/v1/access-log", {"limit": 4})
    assert [len(p) for p in pages] == [4, 4, 3]
    ids = [row["id"] for page in pages for row in page]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 11
    assert [row["presence_id"] for row in pages[0]] == ["p10", "p9", "p8", "p7"]
    first = client.get("/api/v1/access-log", params={"limit": 4})
    add(settings, AccessLog(at=now, bay_id="G1", presence_id="late", plate="LATE1", accepted=True))
    rest = walk(client, next_link(first))
    assert [row["id"] for page in rest for row in page] == ids[4:]
    assert client.get("/api/v1/access-log", params={"limit": 1}).json()[0]["presence_id"] == "late"
    refused = client.get("/api/v1/access-log", params={"accepted": False}).json()
    assert [row["presence_id"] for row in refused] == ["p9", "p6", "p3", "p0"]
    r = client.get("/api/v1/access-log", params={"bay_id": "G2", "accepted": True, "limit": 2})
    assert "bay_id=G2" in r.headers["link"] and "accepted=true" in r.headers["link"]
    assert [row["presence_id"] for page in [r.json(), *walk(client, next_link(r))] for row in page] == [
        "p7", "p5", "p1"]
    assert [row["presence_id"] for row in client.get("/api/v1/access-log?plate=gt-04-aa").json()] == ["p4"]
    since, until = (now - timedelta(minutes=25)).isoformat(), (now - timedelta(minutes=22)).isoformat()
    window = client.get("/api/v1/access-log", params={"since": since, "until": until}).json()
    assert [row["presence_id"] for row in window] == ["p7", "p6", "p5"]
    assert_bad_cursors(client, "/api/v1/access-log", [encode_cursor("3"), encode_cursor(True), encode_cursor(1, 2)])


# --- vehicles ---------------------------------------------------------------------------------


def test_vehicles_keyset_pages_search_and_operator_only(env, clock: FakeClock) -> None:
    client, settings = env
    now = clock()
    owners = ["Anna Smith", "Bob Jones", "Carla SMITHERS", "Dan 100% Fleet", "Eve Brown", "Fay Smith",
              "Gus Green", "Hal White", "Ida Black"]
    add(settings, *[Vehicle(plate=f"EV{i}{'X' if i % 2 else 'Y'}{9 - i}", owner_name=o, created_at=now)
                    for i, o in enumerate(owners)])
    csrf = login(client, "view")
    assert client.get("/api/v1/vehicles").status_code == 403
    r = client.put("/api/v1/vehicles/ZZ1", json={"plate": "ZZ1", "owner_name": "x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    client.cookies.clear()
    h = {"X-CSRF-Token": login(client, "op")}
    pages = walk(client, "/api/v1/vehicles", {"limit": 4})
    plates = [v["plate"] for page in pages for v in page]
    assert [len(p) for p in pages] == [4, 4, 1] and plates == sorted(plates) and len(set(plates)) == 9
    assert set(pages[0][0]) == {"plate", "owner_name", "email"}
    first = client.get("/api/v1/vehicles", params={"limit": 4})
    assert client.put("/api/v1/vehicles/AA1", json={"plate": "AA1", "owner_name": "Early Bird"},
                      headers=h).status_code == 200  # sorts first: on no later page
    assert [v["plate"] for page in walk(client, next_link(first)) for v in page] == plates[4:]
    smiths = client.get("/api/v1/vehicles", params={"q": "smith"}).json()
    assert [v["owner_name"] for v in smiths] == ["Anna Smith", "Carla SMITHERS", "Fay Smith"]
    r = client.get("/api/v1/vehicles", params={"q": "SMITH", "limit": 2})
    assert "q=SMITH" in r.headers["link"]
    assert [v["owner_name"] for v in client.get(next_link(r)).json()] == ["Fay Smith"]
    assert [v["plate"] for v in client.get("/api/v1/vehicles", params={"q": "ev-3 x"}).json()] == ["EV3X6"]
    assert [v["owner_name"] for v in client.get("/api/v1/vehicles", params={"q": "100%"}).json()] == [
        "Dan 100% Fleet"]
    assert client.get("/api/v1/vehicles", params={"q": "%"}).json()[0]["owner_name"] == "Dan 100% Fleet"
    assert client.get("/api/v1/vehicles", params={"q": "_"}).json() == []
    assert client.get("/api/v1/vehicles", params={"limit": 501}).status_code == 422
    assert_bad_cursors(client, "/api/v1/vehicles", [encode_cursor(5), encode_cursor("EV1", "EV2")])


# --- transactions -----------------------------------------------------------------------------


def test_transactions_keyset_pages_and_filters(env, clock: FakeClock) -> None:
    client, settings = env
    now = clock()
    # Starts in pairs (same second on CP1 and CP2: ties by charge point, then transaction id); even ones ended.
    txs = [Transaction(charge_point_id=f"CP{1 + i % 2}", transaction_id=f"T{i:02d}",
                       started_at=now - timedelta(hours=i // 2), updated_at=now,
                       ended_at=None if i % 2 else now - timedelta(hours=i // 2) + timedelta(minutes=40))
           for i in range(10)]
    add(settings, *txs)
    expected = [(t.charge_point_id, t.transaction_id) for t in sorted(
        txs, key=lambda t: (t.started_at, t.charge_point_id, t.transaction_id), reverse=True)]
    login(client, "view")
    pages = walk(client, "/api/v1/transactions", {"limit": 3})
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [(t["charge_point_id"], t["transaction_id"]) for page in pages for t in page] == expected
    assert expected[:2] == [("CP2", "T01"), ("CP1", "T00")]
    first = client.get("/api/v1/transactions", params={"limit": 3})
    add(settings, Transaction(charge_point_id="CP3", transaction_id="NEW", started_at=now + timedelta(minutes=1),
                              updated_at=now))
    rest = walk(client, next_link(first))
    assert [(t["charge_point_id"], t["transaction_id"]) for page in rest for t in page] == expected[3:]
    active = client.get("/api/v1/transactions", params={"active": True}).json()
    assert [t["transaction_id"] for t in active] == ["NEW", "T01", "T03", "T05", "T07", "T09"]
    ended = client.get("/api/v1/transactions", params={"active": False, "charge_point_id": "CP1", "limit": 2})
    assert "active=false" in ended.headers["link"] and "charge_point_id=CP1" in ended.headers["link"]
    assert [t["transaction_id"] for page in [ended.json(), *walk(client, next_link(ended))] for t in page] == [
        "T00", "T02", "T04", "T06", "T08"]
    since, until = (now - timedelta(hours=2)).isoformat(), (now - timedelta(hours=1)).isoformat()
    window = client.get("/api/v1/transactions", params={"since": since, "until": until}).json()
    assert [t["transaction_id"] for t in window] == ["T05", "T04"]
    naive = (now - timedelta(hours=1)).replace(tzinfo=None).isoformat()  # no zone: UTC (was a server error)
    assert [t["transaction_id"] for t in client.get("/api/v1/transactions", params={"since": naive}).json()] == [
        "NEW", "T01", "T00", "T03", "T02"]
    assert len(client.get("/api/v1/transactions", params={"limit": 9999}).json()) == 11  # clamped to 500
    assert_bad_cursors(client, "/api/v1/transactions", [encode_cursor(now, "CP1"), encode_cursor(now, "CP1", 3),
                                                        encode_cursor("soon", "CP1", "T1")])


def test_list_endpoints_document_their_pages(env) -> None:
    client, _ = env
    spec = client.app.openapi()
    for path in ("/api/v1/visits", "/api/v1/lists/{name}", "/api/v1/penalties", "/api/v1/access-log",
                 "/api/v1/vehicles", "/api/v1/transactions"):
        op = spec["paths"][path]["get"]
        assert "More pages: `X-Next-Cursor` and" in " ".join(op["description"].split()), path
        assert "cursor" in {p["name"] for p in op["parameters"]}, path
    assert spec["paths"]["/api/v1/penalties"]["get"]["operationId"] == "list_penalties_api_v1_penalties_get"
