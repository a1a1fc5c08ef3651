"""Finding 2: bodies were read whole before any size check. Every route class has a limit, enforced
while the body streams in (a real server, a body sent in chunks with no Content-Length)."""

from __future__ import annotations

import httpx
import pytest

from api import limits
from models.tables import Role
from tests.foundation.helpers import EDGE_TOKEN, LiveServer, add_user, client_for, free_port, login, make_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    settings = make_settings(tmp, f"sqlite:///{tmp / 'test.db'}", port=free_port(),
                             csms_intakes=[{"name": "hub", "auth": "bearer", "secret": "s" * 24}])
    client_for(settings)  # migrates
    add_user(settings, "root", Role.admin)
    srv = LiveServer(settings).start()
    yield srv
    srv.stop()


def chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


JSON, FORM = "application/json", "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("path", "limit", "ctype"),
    [
        ("/api/v1/auth/login", limits.LOGIN_BODY, JSON),
        ("/login", limits.LOGIN_BODY, FORM),
        ("/notice/abc/dispute", limits.LOGIN_BODY, FORM),
        ("/api/v1/csms/events", limits.DEFAULT_BODY, JSON),
        ("/api/v1/events", limits.DEFAULT_BODY, JSON),
    ],
)
def test_anonymous_bodies_over_the_limit_are_refused_while_streaming(server, path, limit, ctype):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post(path, content=chunks(limit + 128 * 1024), headers={"Content-Type": ctype})
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        declared = c.post(path, content=b"x" * (limit + 1), headers={"Content-Type": ctype})
        assert declared.status_code == 413


def test_route_classes_get_their_own_limits(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        csrf = login(c, "root")
        token = c.post("/api/v1/tokens", json=EDGE_TOKEN, headers={"X-CSRF-Token": csrf}).json()["token"]
        h = {"X-CSRF-Token": csrf}
        # A CSV import may be larger than a JSON body, but not without end.
        csv_ok = "plate\n" + "AB123CD\n" * 60_000  # ~480 KiB: over the JSON limit, under the CSV one
        r = c.post("/api/v1/lists/whitelist/import", files={"file": ("w.csv", csv_ok, "text/csv")}, headers=h)
        assert r.status_code == 200, r.text[:200]
        r = c.post("/api/v1/lists/whitelist/import", headers=h,
                   files={"file": ("w.csv", "plate\n" + "AB123CD\n" * 400_000, "text/csv")})
        assert r.status_code == 413
        r = c.put("/api/v1/settings/site", content=chunks(limits.DEFAULT_BODY + 1024),
                  headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 413
        c.cookies.clear()
        auth = {"Authorization": f"Bearer {token}"}
        r = c.put("/api/v1/evidence/gate/2026-11-02/big.jpg", content=chunks(limits.IMAGE_BODY + 1024), headers=auth)
        assert r.status_code == 413
