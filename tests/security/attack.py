"""The standing attack run: schemathesis over the whole OpenAPI, as every role, looking for 5xx and
for answers the OpenAPI document does not promise (a status, a media type or a body that breaks its
response schema; finding 14).

Used by tests/security/test_attack_suite.py (a few examples per operation, in CI) and by
`python bench/attack.py --examples 200` (the long run). Requests go to the app in-process (ASGI), never
to the network: operations that open a URL the caller names (camera test, snapshots) are left out.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import response_schema_conformance
from schemathesis.core.failures import FailureGroup
from sqlmodel import Session

from api.routes.tokens import create_token
from models.db import make_engine
from models.tables import Role
from tests.foundation.helpers import add_user, client_for, login, make_settings

# Endless streams, session enders, and operations that reach out to a URL from the request.
SKIP = {
    ("GET", "/api/v1/alerts/stream"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/cameras/test"),
    ("GET", "/api/v1/cameras/{name}/snapshot"),
}


def run_attack(examples: int = 5, workdir: Path | None = None) -> dict[tuple[str, str, str], list[str]]:
    """{(role, method, path): [what went wrong, ...]} for every 5xx or crash found."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bw-attack-"))
    cfg = make_settings(workdir, f"sqlite:///{workdir / 'attack.db'}",
                        csms_intakes=[{"name": "hub", "auth": "bearer", "secret": "s" * 24}])
    client = client_for(cfg)
    for role in (Role.admin, Role.operator, Role.viewer):
        add_user(cfg, f"u-{role.value}", role)
    engine = make_engine(cfg.db_url)
    with Session(engine) as db:
        device = create_token(db, "attack-edge", Role.device, actor="test", scopes=["camera:*", "charger:*"])[1]
    engine.dispose()
    found: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
    with client:
        principals: dict[str, dict[str, str]] = {"anonymous": {}, "device": {"Authorization": f"Bearer {device}"}}
        for role in (Role.admin, Role.operator, Role.viewer):
            csrf = login(client, f"u-{role.value}")
            principals[role.value] = {"Cookie": f"bw_session={client.cookies.get('bw_session')}",
                                      "X-CSRF-Token": csrf}
            client.cookies.clear()
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
        for result in schema.get_all_operations():
            op = result.ok()
            key = (op.method.upper(), op.path)
            if key in SKIP:
                continue
            for who, headers in principals.items():
                try:
                    _attack(op, examples, headers, found[(who, *key)])
                except Exception as exc:  # an exception escaping the app is a crash too
                    found[(who, *key)].append(_describe(exc))
    return {k: v for k, v in found.items() if v}


def _describe(exc: BaseException) -> str:
    """What escaped, unwrapped from hypothesis' groups (a flaky failure names the real exception and
    where the app raised it)."""
    import traceback

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    frames = traceback.extract_tb(exc.__traceback__)
    app = [f for f in frames if "/site-packages/" not in f.filename and "/tests/" not in f.filename]
    where = f" at {app[-1].filename.rsplit('/', 2)[-2:]}:{app[-1].lineno}" if app else ""
    return f"raised {type(exc).__name__}: {str(exc)[:300]}{where}"


def body_problem(case, response) -> str | None:
    """Why a JSON answer's body is not what its documented response schema says, or None."""
    try:
        case.validate_response(response, checks=[response_schema_conformance])
    except FailureGroup as exc:  # a BaseExceptionGroup, one failure per violated field
        return " ".join(" ".join(str(f) for f in exc.exceptions).split())[:300]
    return None


def _attack(op, examples: int, headers: dict[str, str], problems: list[str]) -> None:
    responses = op.definition.raw.get("responses", {})
    @given(op.as_strategy())
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def attack(case) -> None:
        r = case.call(headers=headers)
        where = f"path={case.path_parameters} query={case.query}"
        if r.status_code >= 500:
            problems.append(f"{r.status_code} {r.text[:160]} {where}")
            return
        # Finding 14: every answer is one the OpenAPI document promises, in the media type it promises.
        documented = responses.get(str(r.status_code)) or responses.get("default")
        if documented is None:
            problems.append(f"undocumented status {r.status_code} {r.text[:120]} {where}")
            return
        ctype = r.headers.get("content-type") or ""
        media = (ctype[0] if isinstance(ctype, list) and ctype else str(ctype or "")).split(";")[0].strip()
        content = documented.get("content") or {}
        if content and media and media not in content:
            problems.append(f"{r.status_code} answered {media}, documented {sorted(content)} {where}")
            return
        wrong = body_problem(case, r)
        if wrong:
            problems.append(f"{r.status_code} body breaks its schema: {wrong} {where}")

    attack()
