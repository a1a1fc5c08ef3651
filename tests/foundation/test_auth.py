"""Operators through the real app: sessions, roles, CSRF, throttling and the audit trail."""

import re

import pytest
from sqlmodel import Session, select

from models.db import make_engine
from models.tables import AuditLog, Role
from tests.foundation.helpers import PASSWORD, add_user, client_for, login, make_settings


@pytest.fixture
def app_env(tmp_path, db_url, clock):
    settings = make_settings(tmp_path, db_url)
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    add_user(settings, "olga", Role.operator)
    add_user(settings, "vic", Role.viewer)
    with client:
        yield settings, client


def audit_rows(settings, **where):
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        q = select(AuditLog).order_by(AuditLog.id)
        for k, v in where.items():
            q = q.where(getattr(AuditLog, k) == v)
        rows = list(db.exec(q))
    engine.dispose()
    return rows


def test_anonymous_gets_401_or_login_redirect(app_env):
    _, client = app_env
    assert client.get("/api/v1/users").status_code == 401
    r = client.get("/", headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
    assert client.get("/healthz").json() == {"status": "ok"}


def test_roles_enforced(app_env):
    _settings, client = app_env
    login(client, "vic")
    assert client.get("/api/v1/me").json()["user"]["role"] == "viewer"
    assert client.get("/api/v1/users").status_code == 403
    assert client.get("/api/v1/audit").status_code == 403
    client.cookies.clear()
    login(client, "olga")
    assert client.get("/api/v1/audit").status_code == 200
    assert client.get("/api/v1/users").status_code == 403


def test_admin_manages_users_with_audit_and_csrf(app_env):
    settings, client = app_env
    csrf = login(client, "root")
    body = {"username": "nina", "password": "another long password", "role": "operator", "email": "nina@example.org"}
    assert client.post("/api/v1/users", json=body).status_code == 403  # no CSRF header
    r = client.post("/api/v1/users", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    user = r.json()
    assert "password" not in user and "password_hash" not in user
    assert client.post("/api/v1/users", json=body, headers={"X-CSRF-Token": csrf}).status_code == 409
    r = client.patch(f"/api/v1/users/{user['id']}", json={"role": "viewer"}, headers={"X-CSRF-Token": csrf})
    assert r.json()["role"] == "viewer"
    rows = audit_rows(settings, entity="user", entity_id=user["id"])
    assert [r.action for r in rows] == ["create", "update"]
    assert rows[1].actor == "root"
    assert rows[1].before["role"] == "operator" and rows[1].after["role"] == "viewer"
    assert "password" not in rows[0].after
    r = client.delete(f"/api/v1/users/{user['id']}", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    assert audit_rows(settings, entity="user", entity_id=user["id"])[-1].action == "delete"
    # The audit API shows the same trail, newest first.
    log = client.get("/api/v1/audit", params={"entity": "user", "limit": 2}).json()
    assert [e["action"] for e in log] == ["delete", "update"]


def test_last_admin_cannot_be_removed(app_env):
    _, client = app_env
    csrf = login(client, "root")
    me = client.get("/api/v1/me").json()["user"]
    r = client.patch(f"/api/v1/users/{me['id']}", json={"role": "viewer"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409


def test_form_login_logout_and_csrf(app_env):
    settings, client = app_env
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    bad = client.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": "forged"})
    assert bad.status_code == 200 and "expired" in bad.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', bad.text).group(1)  # the form was renewed
    r = client.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token, "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    home = client.get("/", follow_redirects=True)  # / leads to the dashboard overview
    assert home.status_code == 200 and "olga" in home.text
    session_csrf = re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)
    assert client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    r = client.post("/logout", data={"csrf_token": session_csrf})
    assert r.status_code == 303
    assert client.get("/api/v1/me").status_code == 401
    assert [row.action for row in audit_rows(settings, actor="olga")] == ["login", "logout"]


def test_open_redirect_refused(app_env):
    _, client = app_env
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post(
        "/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token, "next": "//evil.example"}
    )
    assert r.headers["location"] == "/"


def test_login_throttled_then_released(app_env, clock):
    settings, client = app_env
    for _ in range(settings.security.login_max_failures):
        r = client.post("/api/v1/auth/login", json={"username": "olga", "password": "wrong password"})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "olga", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert len(audit_rows(settings, action="login_failed")) == settings.security.login_max_failures
    clock.advance(seconds=settings.security.login_lockout_s + 1)
    assert client.post("/api/v1/auth/login", json={"username": "olga", "password": PASSWORD}).status_code == 200
    assert 'baywarden_login_failures_total 5.0' in client.get("/metrics").text


def test_session_expires_with_clock(app_env, clock):
    settings, client = app_env
    login(client, "vic")
    assert client.get("/api/v1/me").status_code == 200
    clock.advance(seconds=settings.security.session_max_age_s + 1)
    assert client.get("/api/v1/me").status_code == 401


def test_password_change_ends_sessions(app_env):
    _, client = app_env
    from fastapi.testclient import TestClient

    other = TestClient(client.app)
    login(other, "olga")
    csrf = login(client, "root")
    olga = next(u for u in client.get("/api/v1/users").json() if u["username"] == "olga")
    r = client.patch(f"/api/v1/users/{olga['id']}", json={"password": "a brand new password"},
                     headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert other.get("/api/v1/me").status_code == 401


def test_html_is_escaped(app_env):
    _settings, client = app_env
    r = client.get("/login", params={"error": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in r.text and "&lt;script&gt;" in r.text


def test_readyz_reports_database(app_env, tmp_path):
    _, client = app_env
    assert client.get("/readyz").json()["database"] == "ok"
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.foundation.helpers import make_settings as ms

    broken = ms(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(broken, components=[])) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_parallel_wrong_passwords_are_counted_one_by_one(tmp_path):
    """Finding 8: 60 parallel wrong passwords got 19 real checks against a limit of 5."""
    import threading

    import httpx
    from sqlmodel import Session, select

    from models.db import make_engine
    from models.tables import AuditLog
    from tests.foundation.helpers import LiveServer, add_user, client_for, free_port, make_settings

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'race.db'}", port=free_port())
    client_for(settings)
    add_user(settings, "olga", Role.operator)
    server = LiveServer(settings).start()
    codes: list[int] = []
    try:
        def guess(i: int) -> None:
            r = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": "olga", "password": f"wrong-{i}"},
                           timeout=60)
            codes.append(r.status_code)

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.stop()
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        checked = [a for a in db.exec(select(AuditLog)) if a.action == "login_failed"]
    engine.dispose()
    limit = settings.security.login_max_failures
    assert len(checked) == limit, (len(checked), sorted(codes))
    assert codes.count(401) == limit and codes.count(401) + codes.count(429) + codes.count(503) == 30


def test_password_checks_are_bounded_and_the_rest_refused_with_retry_after():
    """Finding 4: unbounded concurrent argon2 checks (64 MiB each) took the service to 1.2 GB."""
    import threading
    import time

    from service.login_gate import Busy, LoginGate

    gate = LoginGate(concurrent=2, waiting=3, wait_s=5)
    running, peak, busy = [0], [0], [0]
    lock = threading.Lock()

    def attempt(i: int) -> None:
        try:
            with gate.keys([f"user:u{i}", f"ip:10.0.0.{i}"]), gate.hashing():
                with lock:
                    running[0] += 1
                    peak[0] = max(peak[0], running[0])
                time.sleep(0.2)
                with lock:
                    running[0] -= 1
        except Busy:
            with lock:
                busy[0] += 1

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    assert busy[0] >= 20 - 5  # two running, three waiting: everyone else is told at once


def test_login_form_token_must_be_issued_by_the_server(app_env):
    """Finding 12: any equal cookie/field pair passed the login form's CSRF check."""
    _, client = app_env
    client.cookies.clear()
    client.cookies.set("bw_login_csrf", "made-up-by-attacker")
    r = client.post("/login", data={"username": "root", "password": PASSWORD, "csrf_token": "made-up-by-attacker"})
    assert r.status_code == 200 and "expired" in r.text and "bw_session" not in r.headers.get("set-cookie", "")
    client.cookies.clear()
    page = client.get("/login")
    assert "no-store" in page.headers["cache-control"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    token = page.cookies.get("bw_login_csrf") or client.cookies.get("bw_login_csrf")
    r = client.post("/login", data={"username": "root", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303


def test_forwarded_for_is_believed_only_from_configured_proxies(tmp_path):
    from baywarden.service import proxy_options
    from tests.foundation.helpers import make_settings

    plain = make_settings(tmp_path, f"sqlite:///{tmp_path / 'a.db'}")
    assert proxy_options(plain) == {"proxy_headers": False, "forwarded_allow_ips": ""}
    behind = make_settings(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", security={"trusted_proxies": ["10.0.0.2"]})
    assert proxy_options(behind) == {"proxy_headers": True, "forwarded_allow_ips": "10.0.0.2"}


def test_every_answer_carries_the_security_headers_and_is_counted_by_route(app_env):
    """The headers and request metrics come from one plain ASGI middleware: JSON, HTML, static files
    (cacheable) and errors all get them, and /metrics counts each request under its route template."""
    _, client = app_env
    for path, cached in (("/healthz", False), ("/login", False), ("/static/app.css", True),
                         ("/api/v1/me", False)):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY", path
        assert r.headers["referrer-policy"] == "same-origin", path
        assert ("cache-control" in r.headers and "no-store" in r.headers["cache-control"]) is not cached, path
        assert ("content-security-policy" in r.headers) is r.headers["content-type"].startswith("text/html"), path
    text = client.get("/metrics").text
    assert 'baywarden_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'route="/api/v1/me",status="401"' in text
