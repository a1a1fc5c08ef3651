"""Operators' enforcement API: penalty review and lifecycle (audited), lists with CSV, vehicles."""

from datetime import timedelta

import pytest
from sqlmodel import Session

from models.db import make_engine
from models.tables import Penalty, Role
from tests.foundation.helpers import add_user, client_for, login, make_settings


@pytest.fixture
def env(tmp_path, db_url, clock):
    settings = make_settings(tmp_path, db_url)
    client = client_for(settings, clock=clock)
    add_user(settings, "olga", Role.operator)
    add_user(settings, "vic", Role.viewer)
    now = clock()
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.add(Penalty(violation_id="B1/p1/idle", visit_id="B1/p1", bay_id="B1", kind="idle", plate=None,
                       started_at=now, ended_at=now + timedelta(minutes=30), minutes=30, amount="15.00",
                       state="pending_review", needs_review=True, review_reason="plate unreadable",
                       created_at=now, updated_at=now))
        db.commit()
    engine.dispose()
    with client:
        yield client


def test_penalty_review_lifecycle(env):
    client = env
    login(client, "vic")
    (p,) = client.get("/api/v1/penalties", params={"state": "pending_review"}).json()
    me = client.get("/api/v1/me").json()
    r = client.post(f"/api/v1/penalties/{p['violation_id']}/issue", json={}, headers={"X-CSRF-Token": me["csrf_token"]})
    assert r.status_code == 403
    client.cookies.clear()
    h = {"X-CSRF-Token": login(client, "olga")}
    url = f"/api/v1/penalties/{p['violation_id']}"
    r = client.post(f"{url}/issue", json={}, headers=h)
    assert r.status_code == 422 and "confirm the plate" in r.json()["detail"]
    r = client.post(f"{url}/issue", json={"plate": "ab-123 cd"}, headers=h)
    assert r.json()["state"] == "notice_issued" and r.json()["plate"] == "AB123CD"
    assert client.post(f"{url}/mark-paid", json={}, headers=h).json()["state"] == "paid"
    r = client.post(f"{url}/waive", json={"note": "x"}, headers=h)
    assert r.status_code == 409 and "paid" in r.json()["detail"]
    log = client.get("/api/v1/audit", params={"entity": "penalty"}).json()
    assert [e["action"] for e in log] == ["penalty_mark-paid", "penalty_issue"]
    assert log[1]["before"]["state"] == "pending_review" and log[1]["after"]["plate"] == "AB123CD"


def test_dispute_needs_reason(env):
    client = env
    h = {"X-CSRF-Token": login(client, "olga")}
    url = "/api/v1/penalties/B1/p1/idle"
    client.post(f"{url}/issue", json={"plate": "AB123CD"}, headers=h)
    assert client.post(f"{url}/dispute", json={}, headers=h).status_code == 422
    r = client.post(f"{url}/dispute", json={"note": "I was charging"}, headers=h)
    assert r.json()["state"] == "disputed" and r.json()["note"] == "I was charging"
    assert client.post(f"{url}/waive", json={"note": "charger log confirms"}, headers=h).json()["state"] == "waived"


def test_lists_and_csv_import(env):
    client = env
    h = {"X-CSRF-Token": login(client, "olga")}
    r = client.post("/api/v1/lists/blacklist", json={"plate": "bl-4ck 1", "reason": "stolen", "priority": 9},
                    headers=h)
    assert r.status_code == 201 and r.json()["plate"] == "BL4CK1"
    assert client.post("/api/v1/lists/blacklist", json={"plate": "!"}, headers=h).status_code == 422
    csv_text = ("plate,owner,reason,valid_until\n"
                "AB123CD,Fleet A,staff,2027-01-01T00:00:00Z\n"
                "??,Nobody,bad plate,\n"
                "XY987ZZ,Fleet B,visitor,2027-01-01\n")
    files = {"file": ("w.csv", csv_text, "text/csv")}
    r = client.post("/api/v1/lists/whitelist/import", files=files, headers=h)
    body = r.json()
    assert body["dry_run"] and body["valid"] == 1 and body["imported"] == 0
    assert [e["line"] for e in body["errors"]] == [3, 4]
    assert "plate" in body["errors"][0]["errors"][0] and "valid_until" in body["errors"][1]["errors"][0]
    assert client.get("/api/v1/lists/whitelist").json() == []  # a dry run stores nothing
    r = client.post("/api/v1/lists/whitelist/import", params={"dry_run": False}, files=files, headers=h)
    assert r.status_code == 422 and client.get("/api/v1/lists/whitelist").json() == []  # all or nothing
    good = {"file": ("w.csv", "plate,owner\nAB123CD,Fleet A\nXY987ZZ,Fleet B\n", "text/csv")}
    r = client.post("/api/v1/lists/whitelist/import", params={"dry_run": False}, files=good, headers=h)
    assert r.json()["imported"] == 2
    assert [e["plate"] for e in client.get("/api/v1/lists/whitelist", params={"q": "AB123CO"}).json()] == ["AB123CD"]
    exported = client.get("/api/v1/lists/whitelist/export").text.splitlines()
    assert exported[0] == "plate,owner,reason,priority,valid_from,valid_until" and len(exported) == 3
    big = {"file": ("big.csv", "plate\n" + "AB123CD\n" * 200_000, "text/csv")}
    assert client.post("/api/v1/lists/whitelist/import", files=big, headers=h).status_code == 413
    bad_header = {"file": ("x.csv", "number,who\n1,2\n", "text/csv")}
    assert client.post("/api/v1/lists/whitelist/import", files=bad_header, headers=h).status_code == 422


def test_vehicles_registry(env):
    client = env
    h = {"X-CSRF-Token": login(client, "olga")}
    body = {"plate": "AB-123-CD", "owner_name": "Ann", "email": "ann@example.org"}
    r = client.put("/api/v1/vehicles/AB123CD", json=body, headers=h)
    assert r.status_code == 200 and r.json()["plate"] == "AB123CD"
    bad = client.put("/api/v1/vehicles/AB123CD", json={"plate": "AB123CD", "email": "not-an-email"}, headers=h)
    assert bad.status_code == 422
    assert client.get("/api/v1/vehicles").json()[0]["email"] == "ann@example.org"


def test_csv_export_cannot_inject_formulas(env):
    """Finding 3: owner/reason cells starting with = + - @ or a tab were written as they are."""
    import csv
    import io

    client = env
    h = {"X-CSRF-Token": login(client, "olga")}
    payloads = ['=HYPERLINK("http://x","y")', "=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", " =1"]
    for i, text in enumerate(payloads):
        r = client.post("/api/v1/lists/blacklist", json={"plate": f"AB{i}CD", "owner": text, "reason": text},
                        headers=h)
        assert r.status_code == 201, r.text
    rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/lists/blacklist/export").text)))
    assert len(rows) == len(payloads)
    for row in rows:
        for cell in (row["owner"], row["reason"]):
            assert cell.startswith("'"), cell
    # Importing the export back stores the original text, not the escaped one.
    back = client.get("/api/v1/lists/blacklist/export").text.replace("AB", "ZX")
    r = client.post("/api/v1/lists/whitelist/import", params={"dry_run": False},
                    files={"file": ("b.csv", back, "text/csv")}, headers=h)
    assert r.status_code == 200, r.text
    owners = sorted(e["owner"] for e in client.get("/api/v1/lists/whitelist").json())
    assert owners == sorted(p.strip() for p in payloads) or owners == sorted(payloads)


def test_a_csv_the_csv_module_cannot_read_is_422_not_500(env):
    """Found by the long attack run: a carriage return inside an unquoted field raised csv.Error (500).
    Such a CR is now read as a line end; a field past the csv module's size limit is a clear 422."""
    client = env
    h = {"X-CSRF-Token": login(client, "olga")}
    cr = {"file": ("cr.csv", "plate,owner\nAB123CD,Fleet\rA\n", "text/csv")}
    r = client.post("/api/v1/lists/whitelist/import", files=cr, headers=h)
    assert r.status_code == 200, r.text
    huge = {"file": ("huge.csv", "plate,owner\nAB123CD," + "x" * 200_000 + "\n", "text/csv")}
    r = client.post("/api/v1/lists/whitelist/import", files=huge, headers=h)
    assert r.status_code == 422 and "not a readable CSV file" in r.json()["detail"], r.text
