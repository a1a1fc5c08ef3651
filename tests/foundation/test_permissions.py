"""Rights are a table (models.tables.ROLE_PERMISSIONS), checked in one dependency (api.deps.require).

This walks every route of the app, the OpenAPI's and the dashboard's, as anonymous, viewer, operator,
admin and device (session and token), and compares what each gets with the table: a route either names
exactly one permission or is on the short public list below, so a new route without a guard fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.routes.tokens import create_token
from models.db import make_engine
from models.tables import ROLE_PERMISSIONS, Permission, Role
from tests.foundation.helpers import add_user, client_for, login, make_settings

# Routes anyone may call: they authenticate otherwise (HMAC/bearer intakes, signed notice links, the
# login form) or show nothing personal (health, metrics, API docs).
PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/notice/{token}"),
    ("GET", "/notice/{token}/evidence"),
    ("POST", "/notice/{token}/dispute"),
    ("POST", "/notice/{token}/push"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/csms/events"),
    ("POST", "/api/v1/sources/{name}/reads"),
    ("POST", "/api/v1/sources/{name}/platerecognizer"),
    ("POST", "/api/v1/sources/{name}/hikvision"),
    ("PUT", "/ocpi/2.2.1/sessions/{cc}/{party}/{session_id}"),
    ("PATCH", "/ocpi/2.2.1/sessions/{cc}/{party}/{session_id}"),
}
# Any signed-in principal: who am I, and log out.
ANY_PRINCIPAL = {("GET", "/api/v1/me"), ("POST", "/logout")}
# Streams that never end: their refusals are checked, an allowed request is not made.
ENDLESS = {("GET", "/api/v1/alerts/stream")}
# Logging out would end the session the walk uses; logout is tested in test_auth.
ENDS_SESSION = {("POST", "/api/v1/auth/logout"), ("POST", "/logout"), ("POST", "/dash/switch-user")}


def _flat(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        sub = getattr(route, "original_router", None)  # FastAPI >= 0.16x keeps included routers nested
        if sub is not None:
            yield from _flat(sub.routes)
        else:
            yield route


def _permissions(route: APIRoute) -> set[Permission]:
    found: set[Permission] = set()
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        perm = getattr(dep.call, "permission", None)
        if perm is not None:
            found.add(perm)
        stack.extend(dep.dependencies)
    return found


def _api_routes(app) -> list[tuple[str, str, APIRoute]]:
    out = []
    for route in _flat(app.routes):
        if isinstance(route, APIRoute):
            out.extend((method, route.path, route) for method in sorted(route.methods - {"HEAD"}))
    return out


def _concrete(path: str) -> str:
    # Any value fits: the guard runs before path parameters are looked up or even validated.
    return re.sub(r"\{[^}]+\}", "zz9", path.replace("{rel:path}", "cam/2026-01-01/x.jpg"))


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("perm")
    settings = make_settings(tmp, f"sqlite:///{tmp / 'test.db'}")
    client = client_for(settings)
    for role in (Role.admin, Role.operator, Role.viewer):
        add_user(settings, f"u-{role.value}", role)
    engine = make_engine(settings.db_url)
    from sqlmodel import Session

    tokens = {}
    with Session(engine) as db:
        for role in Role:
            tokens[role] = create_token(db, f"t-{role.value}", role, actor="test")[1]
    engine.dispose()
    with client:
        sessions = {}
        for role in (Role.admin, Role.operator, Role.viewer):
            csrf = login(client, f"u-{role.value}")
            sessions[role] = (client.cookies.get("bw_session"), csrf)
            client.cookies.clear()
        yield client, sessions, tokens


def _call(client, method: str, path: str, *, cookie=None, csrf=None, token=None):
    client.cookies.clear()
    headers = {"Accept": "application/json"}
    if cookie:
        client.cookies.set("bw_session", cookie)
        headers["X-CSRF-Token"] = csrf
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.request(method, _concrete(path), headers=headers)


def test_every_route_is_public_or_names_exactly_one_permission(walk):
    client, _, _ = walk
    unguarded, doubled = [], []
    for method, path, route in _api_routes(client.app):
        perms = _permissions(route)
        if (method, path) in PUBLIC | ANY_PRINCIPAL:
            assert not perms, f"{method} {path} is listed public but names {perms}"
        elif not perms:
            unguarded.append(f"{method} {path}")
        elif len(perms) > 1:
            doubled.append(f"{method} {path}: {sorted(perms)}")
    assert not unguarded, f"routes with no permission and not on the public list: {unguarded}"
    assert not doubled


def test_roles_are_sets_of_permissions_not_ranks():
    assert ROLE_PERMISSIONS[Role.device] == {Permission.post_events, Permission.upload_evidence}
    assert Permission.post_events not in ROLE_PERMISSIONS[Role.admin]  # people never post camera events
    assert Permission.read not in ROLE_PERMISSIONS[Role.device]  # a stolen edge token shows no plates
    assert ROLE_PERMISSIONS[Role.viewer] == {Permission.read}


def test_every_route_for_every_role_matches_the_table(walk):
    client, sessions, tokens = walk
    mismatches = []
    checked = 0
    for method, path, route in _api_routes(client.app):
        if (method, path) in PUBLIC:
            continue
        perms = _permissions(route)
        need = next(iter(perms)) if perms else None
        r = _call(client, method, path)
        if r.status_code not in (401, 303):
            mismatches.append(f"anonymous {method} {path}: {r.status_code}")
        if r.status_code == 303 and not r.headers["location"].startswith("/login"):
            mismatches.append(f"anonymous {method} {path}: redirected to {r.headers['location']}")
        principals = [(f"session:{role.value}", role, {"cookie": c, "csrf": x}) for role, (c, x) in sessions.items()]
        principals += [(f"token:{role.value}", role, {"token": t}) for role, t in tokens.items()]
        for who, role, creds in principals:
            allowed = need is None or need in ROLE_PERMISSIONS[role]
            if allowed and (method, path) in ENDLESS | ENDS_SESSION:
                continue
            r = _call(client, method, path, **creds)
            checked += 1
            if allowed and r.status_code in (401, 403):
                mismatches.append(f"{who} {method} {path}: {r.status_code} but the table allows {need}")
            if not allowed and r.status_code != 403:
                mismatches.append(f"{who} {method} {path}: {r.status_code} but the table refuses ({need})")
    assert checked > 400
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/alerts?before_id={n}",
        "/api/v1/alerts/stream?after_id={n}",
        "/api/v1/audit?before_id={n}",
        "/api/v1/users?offset={n}",
        "/api/v1/outbox?offset={n}",
        "/dash/audit?before_id={n}",
        "/dash/outbox?offset={n}",
    ],
)
def test_ids_and_offsets_past_64_bits_are_422_not_500(walk, url):
    """Finding 6: integers >= 2^63 reached the database driver and gave 500."""
    client, sessions, _ = walk
    cookie, csrf = sessions[Role.admin]
    for n in (2**63, 2**64 + 1):
        r = _call(client, "GET", url.format(n=n), cookie=cookie, csrf=csrf)
        assert r.status_code == 422, (url, n, r.status_code)


@pytest.mark.parametrize(
    "url", ["/api/v1/visits?since={t}", "/api/v1/transactions?until={t}", "/api/v1/audit?since={t}",
            # Found by the long attack run (bench/attack.py --examples 100): these had no such check.
            "/api/v1/access-log?since={t}", "/api/v1/access-log?until={t}", "/api/v1/penalties?since={t}",
            "/api/v1/penalties?until={t}", "/api/v1/reads?since={t}", "/api/v1/reads?until={t}"]
)
def test_filter_times_the_database_cannot_hold_are_422(walk, url):
    """Found by the attack suite: a 'since' in year 9999 overflowed on time-zone conversion (500)."""
    client, sessions, _ = walk
    cookie, csrf = sessions[Role.admin]
    for t in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00"):
        r = _call(client, "GET", url.format(t=t), cookie=cookie, csrf=csrf)
        assert r.status_code == 422, (url, t, r.status_code)


def test_charger_ids_past_32_bits_are_422_not_a_database_overflow(walk):
    """Found by the long attack run: PATCH /api/v1/bays/{id} with a connector id past 2^63 reached the
    database (OverflowError, 500). OCPP ids are 32-bit integers."""
    client, sessions, _ = walk
    cookie, csrf = sessions[Role.admin]

    def send(method: str, path: str, body: dict):
        client.cookies.clear()
        client.cookies.set("bw_session", cookie)
        return client.request(method, path, json=body, headers={"X-CSRF-Token": csrf, "Accept": "application/json"})

    r = send("POST", "/api/v1/bays", {"bay_id": "OVF1"})
    assert r.status_code in (200, 201), r.text
    for field in ("connector_id", "evse_id"):
        for n in (2**31, 2**63, 2**64 + 1):
            r = send("PATCH", "/api/v1/bays/OVF1", {field: n})
            assert r.status_code == 422, (field, n, r.status_code)
    assert send("PATCH", "/api/v1/bays/OVF1", {"connector_id": 2**31 - 1}).status_code == 200
