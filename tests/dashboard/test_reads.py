"""The reads log: GET /api/v1/reads and /dash/reads over api/reads.py, on SQLite and PostgreSQL.

Filters, cursor pages that stay put while reads arrive, fuzzy plate search (and its in-memory plate
list keeping up with new reads), roles, 422s that name the bad parameter, and the query plans that
keep it fast on a large table (speed itself is measured by bench/dashboard.py, not here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlmodel import Session

from api import reads as reads_q
from api.routes.tokens import create_token
from models.db import make_engine
from models.settings import Settings
from models.tables import PlateReadRow, Role
from tests.conftest import FakeClock
from tests.dashboard.seed import tiny_jpeg
from tests.foundation.helpers import add_user, client_for, login, make_settings

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path, db_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(tmp_path, db_url)
    client = client_for(settings, clock=clock)
    add_user(settings, "view", Role.viewer)
    with client:
        yield client, settings


def add_reads(settings: Settings, *rows: dict[str, Any]) -> list[int]:
    """Insert reads (defaults: camera cam1, accepted, confidence 0.9); returns their ids in order."""
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as db:
            objs = [
                PlateReadRow(**{"camera": "cam1", "confidence": 0.9, "raw_text": r.get("plate") or "", **r})
                for r in rows
            ]
            db.add_all(objs)
            db.commit()
            return [o.id for o in objs]  # type: ignore[misc]
    finally:
        engine.dispose()


def ids(resp: Any) -> list[int]:
    assert resp.status_code == 200, resp.text
    return [item["id"] for item in resp.json()["items"]]


def get(client: TestClient, **params: Any) -> Any:
    return client.get("/api/v1/reads", params=params)


def test_filters(env) -> None:
    client, settings = env
    login(client, "view")
    a, b, c, d, e, f = add_reads(
        settings,
        {"at": T0 - timedelta(minutes=1), "plate": "AB123CD", "camera": "gate", "confidence": 0.95},
        {"at": T0 - timedelta(minutes=2), "plate": "AB123CD", "camera": "bay", "confidence": 0.60},
        {"at": T0 - timedelta(minutes=3), "plate": "XY999ZZ", "camera": "gate", "confidence": 0.80},
        {
            "at": T0 - timedelta(minutes=4),
            "plate": None,
            "raw_text": "X?",
            "accepted": False,
            "reject_reason": "low confidence",
            "confidence": 0.30,
        },
        {"at": T0 - timedelta(hours=30), "plate": "AB123CD", "camera": "gate", "confidence": 0.99},
        {"at": T0 - timedelta(hours=30, minutes=1), "plate": "EF456GH", "camera": "gate", "confidence": 0.91},
    )
    assert ids(get(client)) == [a, b, c, d, e, f]  # newest first
    assert ids(get(client, camera="gate")) == [a, c, e, f]
    assert ids(get(client, plate="ab-123 cd")) == [a, b, e]  # normalised like stored plates
    assert ids(get(client, plate="AB123CD", camera="gate")) == [a, e]
    # since is inclusive, until exclusive: a read exactly at `until` belongs to the next window.
    assert ids(
        get(client, since=(T0 - timedelta(minutes=3)).isoformat(), until=(T0 - timedelta(minutes=1)).isoformat())
    ) == [b, c]
    assert ids(get(client, since="2026-11-02T08:57:00")) == [a, b, c]  # no zone: UTC
    assert ids(get(client, min_conf=0.9)) == [a, e, f]
    assert ids(get(client, accepted="false")) == [d]
    assert ids(get(client, accepted="true", until=T0 - timedelta(hours=1))) == [e, f]
    assert get(client, camera="nowhere").json() == {
        "items": [],
        "next": None,
        "matched_plates": None,
        "matched_truncated": False,
    }
    item = get(client, plate="XY999ZZ").json()["items"][0]
    assert item["plate"] == "XY999ZZ" and item["camera"] == "gate" and item["accepted"] is True
    assert datetime.fromisoformat(item["at"]) == T0 - timedelta(minutes=3)


def test_cursor_pages_stay_stable_while_reads_arrive(env) -> None:
    client, settings = env
    login(client, "view")
    # Groups of three reads share one timestamp, so page ends fall inside ties: the id breaks them.
    add_reads(settings, *({"at": T0 - timedelta(minutes=i // 3), "plate": f"AB{i:03d}CD"} for i in range(20)))
    expected = ids(get(client, limit=200))
    assert len(expected) == 20
    first = get(client, limit=7).json()
    seen = [x["id"] for x in first["items"]]
    cursor = first["next"]
    # New reads arrive (newer than everything) between page loads, some with the same time as page 1's rows.
    add_reads(
        settings,
        *({"at": T0 + timedelta(minutes=1), "plate": f"NEW{i}"} for i in range(4)),
        {"at": T0, "plate": "NEWTIE"},
    )
    while cursor:
        page = get(client, limit=7, cursor=cursor).json()
        seen += [x["id"] for x in page["items"]]
        assert all(not x["plate"].startswith("NEW") for x in page["items"])
        cursor = page["next"]
    assert seen == expected  # nothing repeated, nothing skipped
    top = get(client, limit=5).json()["items"]
    assert {x["plate"] for x in top} == {"NEW0", "NEW1", "NEW2", "NEW3", "NEWTIE"}


def test_cursor_keeps_filters_and_ends_with_null(env) -> None:
    client, settings = env
    login(client, "view")
    add_reads(
        settings, *({"at": T0 - timedelta(minutes=i), "plate": "AB123CD" if i % 2 else "XY999ZZ"} for i in range(9))
    )
    page = get(client, plate="AB123CD", limit=3).json()
    assert len(page["items"]) == 3 and page["next"]
    last = get(client, plate="AB123CD", limit=3, cursor=page["next"]).json()
    assert [x["plate"] for x in last["items"]] == ["AB123CD"] and last["next"] is None


def test_fuzzy_search_finds_a_one_character_misread(env) -> None:
    client, settings = env
    login(client, "view")
    add_reads(
        settings,
        {"at": T0 - timedelta(minutes=1), "plate": "AB123CD"},
        {"at": T0 - timedelta(minutes=2), "plate": "XY999ZZ"},
        {"at": T0 - timedelta(minutes=3), "plate": "AB123CD"},
        {"at": T0 - timedelta(minutes=4), "plate": "AB128CD"},
        {"at": T0 - timedelta(minutes=5), "plate": "QQ123CD"},
    )
    assert ids(get(client, plate="AB123C0")) == []  # exact: the misread is not stored
    body = get(client, plate="AB123C0", fuzzy=1).json()
    assert body["matched_plates"] == ["AB123CD"]
    assert [x["plate"] for x in body["items"]] == ["AB123CD", "AB123CD"]
    # Distance 2 also reaches the plate two characters off; nearest first.
    assert get(client, plate="AB123C0", fuzzy=2).json()["matched_plates"] == ["AB123CD", "AB128CD"]
    # A dropped character (deletion) is one edit too.
    assert get(client, plate="AB13CD", fuzzy=1).json()["matched_plates"] == ["AB123CD"]
    # A plate first stored after the plate list was loaded is found by the next search.
    add_reads(settings, {"at": T0, "plate": "AB123CE"})
    body = get(client, plate="AB123C0", fuzzy=1).json()
    assert body["matched_plates"] == ["AB123CD", "AB123CE"] and body["items"][0]["plate"] == "AB123CE"
    assert get(client, plate="ZZ000ZZ", fuzzy=1).json() == {
        "items": [],
        "next": None,
        "matched_plates": [],
        "matched_truncated": False,
    }


def test_viewer_reads_anonymous_gets_401_device_403(env) -> None:
    client, settings = env
    add_reads(settings, {"at": T0, "plate": "AB123CD"})
    anon = client.get("/api/v1/reads")
    assert anon.status_code == 401 and anon.json() == {"detail": "login required"}
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        _, viewer_token = create_token(db, "script", Role.viewer, actor="test")
        _, device_token = create_token(db, "edge", Role.device, actor="test")
    engine.dispose()
    r = client.get("/api/v1/reads", headers={"Authorization": f"Bearer {viewer_token}"})
    assert r.status_code == 200 and r.json()["items"][0]["plate"] == "AB123CD"
    assert client.get("/api/v1/reads", headers={"Authorization": f"Bearer {device_token}"}).status_code == 403
    login(client, "view")
    assert ids(client.get("/api/v1/reads")) != []


@pytest.mark.parametrize(
    "params,field,message",
    [
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"limit": 1000}, "limit", "less than or equal to 200"),
        ({"min_conf": 2}, "min_conf", "less than or equal to 1"),
        ({"fuzzy": 5, "plate": "AB1"}, "fuzzy", "less than or equal to 2"),
        ({"fuzzy": 1}, "fuzzy", "needs a plate"),
        ({"plate": "--"}, "plate", "at least one letter or digit"),
        ({"since": "yesterday"}, "since", "valid datetime"),
        ({"since": "2026-11-02T10:00:00Z", "until": "2026-11-02T09:00:00Z"}, "until", "later than the start"),
        ({"accepted": "maybe"}, "accepted", "valid boolean"),
        ({"cursor": "page-2"}, "cursor", "pass the `next` value unchanged"),
        ({"cursor": "999999999999999999_1"}, "cursor", "pass the `next` value unchanged"),
    ],
)
def test_bad_filter_values_are_422_naming_the_parameter(env, params: dict[str, Any], field: str, message: str) -> None:
    client, _ = env
    login(client, "view")
    r = get(client, **params)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert [e["loc"] for e in errors] == [["query", field]]
    assert message in errors[0]["msg"]


def test_openapi_documents_filters_and_next_cursor(env) -> None:
    client, _ = env
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/v1/reads"]["get"]
    assert {p["name"] for p in op["parameters"]} == {
        "camera",
        "plate",
        "fuzzy",
        "since",
        "until",
        "min_conf",
        "accepted",
        "cursor",
        "limit",
    }
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    page = spec["components"]["schemas"][ref]
    assert "cursor=<next>" in page["properties"]["next"]["description"]
    assert "items" in page["required"] and "next" in page["required"]


def test_dashboard_page_fuzzy_thumbnails_and_cursor(env) -> None:
    client, settings = env
    login(client, "view")
    crop = "cam1/2026-11-02/read1.jpg"
    path = Path(settings.evidence_dir) / crop
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny_jpeg())
    add_reads(
        settings,
        {
            "at": T0 - timedelta(minutes=1),
            "plate": "AB123CD",
            "crop_path": crop,
            "frame_path": "cam1/2026-11-02/frame1.jpg",
        },
        *({"at": T0 - timedelta(minutes=2 + i), "plate": f"XY{i:03d}ZZ"} for i in range(4)),
    )
    html = client.get("/dash/reads", params={"plate": "AB123C0", "fuzzy": "1"}).text
    assert 'id="matched-plates"' in html and "AB123CD" in html and "XY000ZZ" not in html
    img = re.search(r'<img class="evidence" src="([^"]+)"', html)
    assert img is not None and img.group(1) == f"/api/v1/evidence/{crop}"
    thumb = client.get(img.group(1))
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert '<option value="1" selected>' in html  # the chosen match distance is kept
    first = client.get("/dash/reads", params={"limit": 2}).text
    nxt = unescape(re.search(r'href="([^"]+)" rel="next"', first).group(1))
    assert "cursor=" in nxt and "XY001ZZ" in client.get(nxt).text and "XY001ZZ" not in first
    bad = client.get("/dash/reads", params={"fuzzy": "1", "min_conf": "high"})
    assert bad.status_code == 422
    assert 'id="rf-fuzzy-err"' in bad.text and "needs a plate" in bad.text and 'id="rf-min_conf-err"' in bad.text
    assert client.get("/dash/reads", params={"cursor": "nope"}).status_code == 422


def test_queries_use_an_index_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    """Each kind of page is an index range read, never a scan of the whole table (EXPLAIN QUERY PLAN)."""
    from models.db import upgrade

    upgrade(sqlite_url)
    settings = make_settings(tmp_path, sqlite_url)
    add_reads(
        settings,
        *({"at": T0 - timedelta(minutes=i), "plate": f"AB{i:03d}CD", "camera": f"c{i % 3}"} for i in range(30)),
    )
    engine = make_engine(sqlite_url)
    statements: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "plate_reads" in statement:
            statements.append((statement, parameters))

    cases = [
        (reads_q.ReadFilter(), None, "ix_plate_reads_at_id"),
        (reads_q.ReadFilter(), reads_q.Cursor(T0 - timedelta(minutes=5), 6), "ix_plate_reads_at_id"),
        (reads_q.ReadFilter(plate="AB001CD"), None, "ix_plate_reads_plate_at_id"),
        (reads_q.ReadFilter(plate="AB001CD", fuzzy=1), reads_q.Cursor(T0, 99), "ix_plate_reads_plate_at_id"),
        (reads_q.ReadFilter(camera="c1", since=T0 - timedelta(hours=1), until=T0), None, "ix_plate_reads_camera_at_id"),
    ]
    try:
        with Session(engine) as db:
            for f, cursor, index in cases:
                statements.clear()
                reads_q.fetch(db, f, cursor, 10)
                page_sql, params = statements[-1]
                plan = " | ".join(
                    row[3]
                    for row in db.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + page_sql, params).fetchall()
                )
                assert f"USING INDEX {index}" in plan, (f, plan)
                assert not re.search(r"SCAN plate_reads(?! USING)", plan), plan
            # Topping up the fuzzy plate list reads only the newest ids, not the plate index.
            vocab = reads_q.vocabulary(engine)
            statements.clear()
            vocab._max_id -= 1  # as if a read had arrived
            vocab.top_up(db)
            plan = " | ".join(
                row[3]
                for row in db.connection()
                .exec_driver_sql("EXPLAIN QUERY PLAN " + statements[-1][0], statements[-1][1])
                .fetchall()
            )
            assert "INTEGER PRIMARY KEY" in plan, plan
    finally:
        engine.dispose()


def test_plate_list_reloads_when_the_table_is_replaced(sqlite_url: str, tmp_path: Path) -> None:
    from models.db import upgrade

    upgrade(sqlite_url)
    settings = make_settings(tmp_path, sqlite_url)
    add_reads(settings, *({"at": T0, "plate": f"AB{i}CD"} for i in range(5)))
    engine = make_engine(sqlite_url)
    try:
        vocab = reads_q.vocabulary(engine)
        with Session(engine) as db:
            assert vocab.similar(db, "AB4CD", 0, 10) == (["AB4CD"], False)
            assert vocab.similar(db, "AB9CD", 1, 2) == (["AB0CD", "AB1CD"], True)  # cut to the nearest, said so
            db.exec(PlateReadRow.__table__.delete())  # type: ignore[attr-defined]
            db.commit()
        add_reads(settings, {"at": T0, "plate": "ZZ1ZZ"})  # SQLite reuses id 1: below the highest seen
        with Session(engine) as db:
            assert vocab.similar(db, "AB4CD", 0, 10) == ([], False)
            assert vocab.similar(db, "ZZ1Z", 1, 10) == (["ZZ1ZZ"], False)
    finally:
        engine.dispose()
