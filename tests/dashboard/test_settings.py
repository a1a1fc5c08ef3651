"""Settings pages and API over HTTP: roles, CSRF, validation next to fields, masked secrets, the audit,
and edits that apply without a restart (real SMTP servers, signed CSMS requests, the retention purge)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from models import audit
from models.db import make_engine
from models.outbox import OutboxMessage
from models.tables import AuditLog, Role, RuntimeSetting, Vehicle
from service.notify import OutboxDispatcher, driver_serializer
from service.retention import purge_expired
from service.runtime_settings import effective_intakes, effective_mail
from tests.conftest import FakeClock
from tests.dashboard.seed import seed_penalty
from tests.foundation.helpers import add_user, client_for, login, make_settings
from tests.notifications.servers import SmtpServer

SECRET = "config-file-shared-secret"
PASSWORD = "smtp-pass-Xy9!"
XSS = '<script>alert("x")</script>'
PAGES = ["/dash/settings", "/dash/settings/mail", "/dash/settings/site", "/dash/settings/retention",
         "/dash/settings/csms-intakes"]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def _env(tmp_path: Path, url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Any]]:
    settings = make_settings(tmp_path, url, site_name="Depot North",
                             csms_intakes=[{"name": "citrine", "auth": "hmac", "secret": SECRET}])
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    add_user(settings, "op", Role.operator)
    add_user(settings, "view", Role.viewer)
    with client:
        yield client, settings


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Any]]:
    yield from _env(tmp_path, sqlite_url, clock)


@pytest.fixture
def any_env(tmp_path: Path, db_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Any]]:
    """The same on SQLite and PostgreSQL (row locks, JSON columns), for the tests that store secrets."""
    yield from _env(tmp_path, db_url, clock)


def as_admin(client: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": login(client, "root")}


def db_rows(settings: Any, model: Any) -> list[Any]:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        rows = list(db.exec(select(model)))
    engine.dispose()
    return rows


def mail_body(port: int, **kw: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "security": "none", "from_address": "bays@example.org", **kw}


def signed(clock: FakeClock, body: bytes, secret: str, name: str = "citrine") -> dict[str, str]:
    ts = str(int(clock().timestamp()))
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Baywarden-CSMS": name, "X-Baywarden-Timestamp": ts, "X-Baywarden-Signature": f"sha256={sig}",
            "Content-Type": "application/json"}


def csms_post(client: TestClient, clock: FakeClock, event_id: str, secret: str) -> int:
    body = json.dumps({"event_id": event_id, "type": "transaction_started", "at": "2026-11-02T09:00:00Z",
                       "charge_point_id": "CP1", "transaction_id": event_id, "connector_id": 1}).encode()
    return client.post("/api/v1/csms/events", content=body, headers=signed(clock, body, secret)).status_code


# --- roles, CSRF, pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_full_and_as_fragment(env, path: str) -> None:
    client, _ = env
    as_admin(client)
    full = client.get(path)
    assert full.status_code == 200, full.text
    assert "<html" in full.text and 'aria-label="Settings sections"' in full.text
    frag = client.get(path, headers={"HX-Request": "true"})
    assert frag.status_code == 200 and "<html" not in frag.text and "<h1>" in frag.text


def test_viewer_refused_operator_reads_admin_edits(env) -> None:
    client, _ = env
    csrf = login(client, "view")
    for path in PAGES:
        assert client.get(path).status_code == 403
    assert client.get("/api/v1/settings/mail").status_code == 403
    assert client.put("/api/v1/settings/retention", json={"evidence_days": 5, "reads_days": 5, "audit_days": 30},
                      headers={"X-CSRF-Token": csrf}).status_code == 403
    csrf = login(client, "op")
    assert client.get("/api/v1/settings/csms-intakes").json()["intakes"][0]["name"] == "citrine"
    html = client.get("/dash/settings/mail").text
    assert 'action="/dash/settings/mail"' not in html and "Send test e-mail" in html  # read-only, but may test
    assert 'action="/dash/settings/csms-intakes"' not in client.get("/dash/settings/csms-intakes").text
    h = {"X-CSRF-Token": csrf}
    assert client.put("/api/v1/settings/mail", json=mail_body(25), headers=h).status_code == 403
    assert client.post("/api/v1/settings/csms-intakes", json={"name": "x"}, headers=h).status_code == 403
    assert client.post("/api/v1/settings/csms-intakes/citrine/rotate", headers=h).status_code == 403
    assert client.delete("/api/v1/settings/site", headers=h).status_code == 403
    assert client.post("/dash/settings/site", data={"csrf_token": csrf, "name": "Mine"}).status_code == 403
    assert client.post("/dash/settings/csms-intakes/citrine/delete", data={"csrf_token": csrf}).status_code == 403
    assert db_rows(env[1], RuntimeSetting) == []


def test_csrf_required(env) -> None:
    client, settings = env
    as_admin(client)
    assert client.put("/api/v1/settings/site", json={"name": "No token"}).status_code == 403
    assert client.post("/dash/settings/site", data={"name": "No token"}).status_code == 403
    assert client.post("/dash/settings/site", data={"name": "Bad", "csrf_token": "forged"}).status_code == 403
    assert client.post("/dash/settings/csms-intakes/citrine/rotate").status_code == 403
    assert db_rows(settings, RuntimeSetting) == []
    html = client.get("/dash/settings/site").text
    assert html.count('name="csrf_token"') >= 1  # every form carries the token


def test_openapi_lists_the_api_not_the_pages(env) -> None:
    client, _ = env
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/settings/mail", "/api/v1/settings/site", "/api/v1/settings/retention",
            "/api/v1/settings/csms-intakes", "/api/v1/settings/csms-intakes/{name}/rotate"} <= set(paths)
    assert not [p for p in paths if p.startswith("/dash")]


# --- validation -----------------------------------------------------------------------------------


def test_validation_errors_next_to_fields(env) -> None:
    client, settings = env
    csrf = as_admin(client)["X-CSRF-Token"]
    r = client.post("/dash/settings/mail", data={"csrf_token": csrf, "enabled": "on", "host": "", "port": "abc",
                                                 "security": "none", "username": "u", "from_address": "nope"})
    assert r.status_code == 422
    for name in ("host", "port", "from_address"):
        assert f'id="set-{name}-err"' in r.text, name
    assert re.search(r'id="set-host"[^>]*aria-invalid="true"', r.text)
    assert 'id="set-from_address" name="from_address" type="email" value="nope"' in r.text  # input kept
    r = client.post("/dash/settings/mail", data={"csrf_token": csrf, "enabled": "on", "host": "smtp.example.org",
                                                 "port": "25", "security": "none", "username": "u",
                                                 "password": "p", "from_address": "a@example.org"})
    assert r.status_code == 422 and 'id="set-security-err"' in r.text and "in clear" in r.text
    r = client.post("/dash/settings/site", data={"csrf_token": csrf, "name": " ", "contact_phone": "call me",
                                                 "website": "javascript:alert(1)", "contact_email": "x"})
    assert r.status_code == 422
    assert 'id="set-name-err">required<' in r.text
    assert re.search(r'id="set-contact_phone-err">[^<]*digits', r.text)
    assert 'id="set-website-err"' in r.text and 'id="set-contact_email-err"' in r.text
    r = client.post("/dash/settings/retention", data={"csrf_token": csrf, "evidence_days": "0", "reads_days": "x",
                                                      "audit_days": "10"})
    assert r.status_code == 422
    assert all(f'id="set-{k}-err"' in r.text for k in ("evidence_days", "reads_days", "audit_days"))
    r = client.post("/dash/settings/csms-intakes", data={"csrf_token": csrf, "name": "bad name!", "secret": "short",
                                                         "max_skew_s": "soon"})
    assert r.status_code == 422
    assert all(f'id="set-{k}-err"' in r.text for k in ("name", "secret", "max_skew_s"))
    assert "short" not in r.text  # a typed secret is not echoed, even when refused
    r = client.post("/dash/settings/csms-intakes", data={"csrf_token": csrf, "name": "citrine"})
    assert r.status_code == 422 and "already exists" in r.text
    r = client.post("/dash/settings/csms-intakes", data={"csrf_token": csrf, "name": ""})
    assert r.status_code == 422 and 'id="set-name-err"' in r.text
    # The API answers in FastAPI's own 422 shape, with the field in `loc`.
    r = client.put("/api/v1/settings/site", json={"name": "Ok", "website": "ftp://x"},
                   headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "website"]
    assert db_rows(settings, RuntimeSetting) == []


# --- secrets --------------------------------------------------------------------------------------


def test_secrets_masked_everywhere_and_empty_field_keeps_them(any_env, smtp: SmtpServer) -> None:
    client, settings = any_env
    h = as_admin(client)
    body = mail_body(smtp.port, security="starttls", username="mailer", password=PASSWORD, verify_tls=False)
    r = client.put("/api/v1/settings/mail", json=body, headers=h)
    assert r.status_code == 200 and r.json()["password_set"] is True and PASSWORD not in r.text
    assert PASSWORD not in client.get("/api/v1/settings/mail").text
    page = client.get("/dash/settings/mail").text
    assert PASSWORD not in page and 'name="password" type="password" value=""' in page
    # The form posted with an empty password field keeps the stored one.
    csrf = h["X-CSRF-Token"]
    r = client.post("/dash/settings/mail", data={"csrf_token": csrf, "enabled": "on", "host": "127.0.0.1",
                                                 "port": str(smtp.port), "security": "starttls", "username": "mailer",
                                                 "password": "", "from_address": "bays@example.org",
                                                 "from_name": "Bays", "timeout_s": "5"})
    assert r.status_code == 303, r.text
    ctx = client.app.state.ctx
    assert effective_mail(ctx).password.get_secret_value() == PASSWORD and effective_mail(ctx).from_name == "Bays"
    # Intake secrets: a generated one is shown once, then only "set".
    made = client.post("/api/v1/settings/csms-intakes", json={"name": "hub", "auth": "bearer"}, headers=h).json()
    assert len(made["secret"]) >= 40
    assert made["secret"] not in client.get("/api/v1/settings/csms-intakes").text
    assert made["secret"] not in client.get("/dash/settings/csms-intakes").text
    r = client.put("/api/v1/settings/csms-intakes/hub", json={"max_skew_s": 60, "secret": ""}, headers=h)
    assert r.status_code == 200 and r.json()["max_skew_s"] == 60
    assert {i.name: i.secret.get_secret_value() for i in effective_intakes(ctx)}["hub"] == made["secret"]
    r = client.post("/dash/settings/csms-intakes/citrine/rotate", data={"csrf_token": csrf})
    shown = re.search(r'id="revealed-secret" class="plate">([^<]+)<', r.text).group(1)
    assert r.headers["cache-control"] == "no-store" and r.headers["hx-push-url"] == "/dash/settings/csms-intakes"
    assert shown not in client.get("/dash/settings/csms-intakes").text
    # The audit has before and after, with every secret masked.
    rows = client.get("/api/v1/audit", params={"entity": "settings"}).json()
    assert {r["action"] for r in rows} >= {"settings_update", "csms_intake_add", "csms_intake_update",
                                           "csms_intake_rotate"}
    dumped = json.dumps(rows)
    for secret in (PASSWORD, made["secret"], shown, SECRET):
        assert secret not in dumped
    rotate = next(r for r in rows if r["action"] == "csms_intake_rotate")
    citrine = next(i for i in rotate["after"]["intakes"] if i["name"] == "citrine")
    assert citrine["secret"] == "*** (changed)" and rotate["before"]["intakes"][0]["secret"] == "***"
    first = next(r for r in reversed(rows) if r["action"] == "settings_update")
    assert first["before"] == {"enabled": False} and first["after"]["password"] == "*** (set)"
    assert first["after"]["host"] == "127.0.0.1"
    # Ticking "remove the stored password" (with no login left) does remove it.
    r = client.post("/dash/settings/mail", data={"csrf_token": csrf, "enabled": "on", "host": "127.0.0.1",
                                                 "port": str(smtp.port), "security": "none", "clear_password": "on",
                                                 "from_address": "bays@example.org"})
    assert r.status_code == 303 and effective_mail(ctx).password is None


# --- edits apply without a restart ----------------------------------------------------------------


def test_mail_edit_applies_to_the_running_dispatcher(env, smtp: SmtpServer, clock: FakeClock) -> None:
    client, settings = env
    ctx = client.app.state.ctx
    dispatch = OutboxDispatcher(ctx)  # built at start, as the scheduler's job is
    assert dispatch() is None  # no mail server yet: nothing to send through
    csrf = as_admin(client)["X-CSRF-Token"]
    r = client.post("/dash/settings/mail/test", data={"csrf_token": csrf, "to": "ops@example.org"})
    assert r.status_code == 422 and 'id="test-err"' in r.text and "no mail server" in r.text
    assert 'id="set-to-err"' not in r.text  # the address was fine: the error is not drawn on it
    r = client.post("/dash/settings/mail", data={"csrf_token": csrf, "enabled": "on", "host": "127.0.0.1",
                                                 "port": str(smtp.port), "security": "none",
                                                 "from_address": "bays@example.org", "timeout_s": "5"})
    assert r.status_code == 303 and r.headers["location"] == "/dash/settings/mail?msg=Mail+settings+saved"
    r = client.post("/dash/settings/mail/test", data={"csrf_token": csrf, "to": "ops@example.org"})
    assert r.status_code == 303 and r.headers["location"].startswith("/dash/settings/mail?test=")
    page = client.get(r.headers["location"]).text
    assert 'id="test-state-value">pending<' in page and 'href="/dash/outbox"' in page and "hx-get=" in page
    assert dispatch().sent == 1
    (got,) = smtp.messages
    assert got.rcpt_tos == ["ops@example.org"] and "Depot North" in got.message["Subject"]
    test_id = r.headers["location"].split("=", 1)[1]
    state = client.get(f"/dash/settings/mail/test/{test_id}").text
    assert 'id="test-state-value">sent<' in state and "hx-get=" not in state  # final: polling stops
    # A second server: the same dispatcher sends there after the next edit.
    other = SmtpServer().start()
    clock.advance(seconds=1)  # a test e-mail's idempotency key holds its time
    try:
        assert client.put("/api/v1/settings/mail", json=mail_body(other.port),
                          headers={"X-CSRF-Token": csrf}).status_code == 200
        assert client.post("/api/v1/settings/test-email", json={"to": "second@example.org"},
                           headers={"X-CSRF-Token": csrf}).status_code == 202
        assert dispatch().sent == 1
        assert [m.rcpt_tos for m in other.messages] == [["second@example.org"]] and len(smtp.messages) == 1
    finally:
        other.stop()
    # Mail turned off on the page: no more e-mail is queued.
    r = client.post("/dash/settings/mail", data={"csrf_token": csrf, "host": "127.0.0.1", "port": "25",
                                                 "from_address": "bays@example.org"})
    assert r.status_code == 303 and effective_mail(ctx) is None
    assert client.post("/api/v1/settings/test-email", json={"to": "x@example.org"},
                       headers={"X-CSRF-Token": csrf}).status_code == 409


def test_rotated_intake_secret_refuses_the_old_signature(any_env, clock: FakeClock) -> None:
    client, _ = any_env
    assert csms_post(client, clock, "e1", SECRET) == 200
    h = as_admin(client)
    new = client.post("/api/v1/settings/csms-intakes/citrine/rotate", headers=h).json()["secret"]
    clock.advance(seconds=1)
    assert csms_post(client, clock, "e2", SECRET) == 401
    assert csms_post(client, clock, "e3", new) == 200
    # A chosen secret through the update, and a deleted intake is refused at once.
    chosen = "chosen-by-the-csms-operator"
    assert client.put("/api/v1/settings/csms-intakes/citrine", json={"secret": chosen},
                      headers=h).status_code == 200
    assert csms_post(client, clock, "e4", new) == 401 and csms_post(client, clock, "e5", chosen) == 200
    assert client.delete("/api/v1/settings/csms-intakes/citrine", headers=h).status_code == 204
    assert csms_post(client, clock, "e6", chosen) == 401
    # Reset: the config file's intake (and secret) apply again.
    assert client.delete("/api/v1/settings/csms-intakes", headers=h).status_code == 204
    assert csms_post(client, clock, "e7", SECRET) == 200
    assert client.get("/api/v1/settings/csms-intakes").json()["source"] == "config"


def test_added_bearer_intake_works_at_once(env, clock: FakeClock) -> None:
    client, _ = env
    csrf = as_admin(client)["X-CSRF-Token"]
    r = client.post("/dash/settings/csms-intakes", data={"csrf_token": csrf, "name": "hub", "auth": "bearer",
                                                         "max_skew_s": "300"})
    assert r.status_code == 200 and "shown only this once" in r.text
    token = re.search(r'id="revealed-secret" class="plate">([^<]+)<', r.text).group(1)
    body = json.dumps({"event_id": "b1", "type": "transaction_started", "at": "2026-11-02T09:00:00Z",
                       "charge_point_id": "CP1", "transaction_id": "9", "connector_id": 1}).encode()
    r = client.post("/api/v1/csms/events", content=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    r = client.post("/dash/settings/csms-intakes", data={"csrf_token": csrf, "name": "typed", "auth": "bearer",
                                                         "secret": "a-secret-i-typed-myself"})
    assert r.status_code == 303 and "Intake+typed+added" in r.headers["location"]


def test_retention_edit_applies_to_the_next_purge(env, clock: FakeClock) -> None:
    client, settings = env
    ctx = client.app.state.ctx
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        audit.record(db, actor="test", action="old", entity="thing", at=clock() - timedelta(days=100))
        db.commit()
    engine.dispose()
    purge_expired(ctx)
    assert [r.action for r in db_rows(settings, AuditLog) if r.action == "old"] == ["old"]  # config: 730 days
    csrf = as_admin(client)["X-CSRF-Token"]
    r = client.post("/dash/settings/retention", data={"csrf_token": csrf, "evidence_days": "10", "reads_days": "20",
                                                      "penalties_days": "400", "audit_days": "60"})
    assert r.status_code == 303
    assert client.get("/api/v1/settings/retention").json() | {"updated_at": None} == {
        "source": "stored", "updated_at": None, "updated_by": "root", "evidence_days": 10, "reads_days": 20,
        "penalties_days": 400, "audit_days": 60}
    assert purge_expired(ctx)["audit"] == 1
    assert not [r for r in db_rows(settings, AuditLog) if r.action == "old"]


# --- site details ----------------------------------------------------------------------------------


def test_site_details_escaped_on_pages_and_on_the_driver_notice(env, clock: FakeClock) -> None:
    client, settings = env
    csrf = as_admin(client)["X-CSRF-Token"]
    r = client.post("/dash/settings/site", data={
        "csrf_token": csrf, "name": f"Depot {XSS}", "legal_name": "Bays & Co <Ltd>", "address": "1 Quay St\r\nLeeds",
        "contact_email": "help@example.org", "contact_phone": "+44 113 496 0000", "website": "https://bays.example"})
    assert r.status_code == 303
    html = client.get("/dash/settings/site").text
    assert XSS not in html and "Depot &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert '<span class="site">Depot &lt;script&gt;' in html  # the header of every page follows the edit
    assert "Bays &amp; Co &lt;Ltd&gt;" in html
    vid = seed_penalty(settings, clock(), plate="AB123CD")
    token = driver_serializer(client.app.state.ctx).dumps(vid)
    client.cookies.clear()  # the driver is not logged in
    notice = client.get(f"/notice/{token}").text
    assert XSS not in notice and "<h1>Parking notice — Depot &lt;script&gt;" in notice
    assert "Bays &amp; Co &lt;Ltd&gt;" in notice and "1 Quay St<br>Leeds<br>" in notice
    assert 'href="mailto:help@example.org"' in notice and 'href="tel:+441134960000"' in notice


def test_penalty_notice_email_carries_the_edited_site(env, clock: FakeClock, smtp: SmtpServer) -> None:
    client, settings = env
    h = as_admin(client)
    client.put("/api/v1/settings/mail", json=mail_body(smtp.port), headers=h)
    client.put("/api/v1/settings/site", json={"name": "Quay Car Park", "legal_name": "Bays Ltd",
                                              "contact_phone": "+44 113 496 0000"}, headers=h)
    ctx = client.app.state.ctx
    vid = seed_penalty(settings, clock(), plate="AB123CD")
    with ctx.session() as db:
        db.add(Vehicle(plate="AB123CD", owner_name="Ann", email="ann@example.org", created_at=clock()))
        ctx.notify(db, "penalty_notice", {"violation_id": vid, "visit_id": "B1/p1", "bay_id": "B1",
                                          "plate": "AB123CD", "kind": "idle", "amount": "15.00", "currency": "EUR",
                                          "started_at": clock().isoformat(), "ended_at": clock().isoformat(),
                                          "minutes": 30})
        db.commit()
    OutboxDispatcher(ctx)()
    (got,) = smtp.messages
    assert got.message["Subject"] == "Penalty notice for AB123CD at Quay Car Park"
    text = got.message.get_body(("plain",)).get_content()
    assert "Bays Ltd" in text and "Questions: +44 113 496 0000" in text


def test_reset_brings_back_the_config_section(env) -> None:
    client, settings = env
    h = as_admin(client)
    assert client.put("/api/v1/settings/site", json={"name": "Edited"}, headers=h).json()["source"] == "stored"
    assert "Edited" in client.get("/dash/settings").text
    r = client.post("/dash/settings/site/reset", data={"csrf_token": h["X-CSRF-Token"]})
    assert r.status_code == 303
    got = client.get("/api/v1/settings/site").json()
    assert got["name"] == "Depot North" and got["source"] == "config"
    assert client.get("/api/v1/audit", params={"entity": "settings"}).json()[0]["action"] == "settings_reset"


def test_invalid_stored_rows_never_stop_the_service(tmp_path: Path, sqlite_url: str, clock: FakeClock,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, sqlite_url, mail={"host": "mx.example.org", "from_address": "a@example.org"},
                             csms_intakes=[{"name": "citrine", "secret": SECRET}])
    client = client_for(settings, clock=clock)  # migrates
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.add(RuntimeSetting(key="mail", value={"host": "", "port": 0}, updated_at=clock(), updated_by="x"))
        db.add(RuntimeSetting(key="retention", value={"evidence_days": "many"}, updated_at=clock(), updated_by="x"))
        db.add(RuntimeSetting(key="site", value=["not", "an", "object"], updated_at=clock(), updated_by="x"))
        db.add(RuntimeSetting(key="csms_intakes", value={"intakes": [{"name": "ok", "secret": "s" * 20},
                                                                     {"name": "bad", "secret": "short"}]},
                              updated_at=clock(), updated_by="x"))
        db.commit()
    engine.dispose()
    add_user(settings, "root", Role.admin)
    with client:
        login(client, "root")
        assert client.get("/api/v1/settings/mail").json()["host"] == "mx.example.org"  # the config file's
        assert client.get("/api/v1/settings/retention").json()["evidence_days"] == 30
        # A bad intake is skipped, never replaced by the config list (that could revive a deleted secret).
        assert [i["name"] for i in client.get("/api/v1/settings/csms-intakes").json()["intakes"]] == ["ok"]
        assert client.get("/api/v1/settings/site").json()["name"] == "Baywarden site"
        assert client.get("/dash/settings").status_code == 200
    assert "stored settings 'mail'" in caplog.text


def test_outbox_rows_of_test_emails_are_audited(env, smtp: SmtpServer) -> None:
    client, settings = env
    h = as_admin(client)
    client.put("/api/v1/settings/mail", json=mail_body(smtp.port), headers=h)
    r = client.post("/dash/settings/mail/test", data={"csrf_token": h["X-CSRF-Token"], "to": "not-an-address"})
    assert r.status_code == 422 and 'id="set-to-err"' in r.text and 'value="not-an-address"' in r.text
    assert db_rows(settings, OutboxMessage) == []
    client.post("/dash/settings/mail/test", data={"csrf_token": h["X-CSRF-Token"], "to": "ops@example.org"})
    assert [r["action"] for r in client.get("/api/v1/audit", params={"entity": "outbox"}).json()] == ["test_email"]
