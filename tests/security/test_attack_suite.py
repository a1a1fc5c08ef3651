"""Schemathesis over the whole API as anonymous, viewer, operator, admin and a device token: no
request a stranger can make gives a 5xx or escapes the app. A few examples per operation here;
`python bench/attack.py --examples 200` is the long run."""

from __future__ import annotations

import pytest

from tests.security.attack import run_attack

pytestmark = pytest.mark.slow


def test_no_operation_gives_5xx_for_any_role(tmp_path):
    found = run_attack(examples=4, workdir=tmp_path)
    assert not found, "\n".join(f"{k}: {v[0]} (x{len(v)})" for k, v in found.items())


def test_openapi_documents_errors_and_media_types(tmp_path):
    """Finding 14: 422 may be a message or FastAPI's list; 400/401/403/404/409/413/503 are documented on
    every operation; CSV, JPEG, the metrics text and the alert stream say their media types."""
    from api.app import create_app
    from tests.foundation.helpers import make_settings

    schema = create_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'o.db'}"), components=[]).openapi()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for code in ("400", "401", "403", "404", "409", "413", "422", "503"):
                assert code in op["responses"], (method, path, code)
    paths = schema["paths"]
    assert "text/csv" in paths["/api/v1/lists/{name}/export"]["get"]["responses"]["200"]["content"]
    assert "image/jpeg" in paths["/api/v1/evidence/{rel}"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    body = paths["/api/v1/events"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in body["anyOf"]} == {"HTTPValidationError", "ErrorMessage"}


def test_a_body_that_breaks_its_response_schema_is_reported(tmp_path):
    """The suite checks answers' bodies, not only their status and media type: the real /api/v1/me
    answer passes, the same answer with a wrong type in it does not."""
    import schemathesis
    from schemathesis.core.transport import Response

    from models.tables import Role
    from tests.foundation.helpers import add_user, client_for, login, make_settings
    from tests.security.attack import body_problem

    cfg = make_settings(tmp_path, f"sqlite:///{tmp_path / 'b.db'}")
    client = client_for(cfg)
    add_user(cfg, "adm", Role.admin)
    with client:
        csrf = login(client, "adm")
        headers = {"Cookie": f"bw_session={client.cookies.get('bw_session')}", "X-CSRF-Token": csrf}
        case = schemathesis.openapi.from_asgi("/openapi.json", client.app)["/api/v1/me"]["GET"].Case()
        real = case.call(headers=headers)
        assert real.status_code == 200 and body_problem(case, real) is None
        broken = Response(status_code=200, headers={"content-type": ["application/json"]},
                          content=b'{"name": 5}', request=real.request, elapsed=0.0, verify=False)
        assert body_problem(case, broken)
