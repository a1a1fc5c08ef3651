"""Bays and site rules pages over HTTP: forms, errors next to fields, roles, escaping, and the JSON API agreeing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.tables import Role
from tests.foundation.helpers import add_user, client_for, login, make_settings

SITE_FORM = {
    "currency": "EUR", "max_stay_min": "240", "overstay_fee_per_min": "0", "overstay_fee_cap": "",
    "idle_grace_min": "10", "idle_fee_per_min": "0.50", "idle_fee_cap": "30", "warn_before_idle": "yes",
    "parked_without_charging_grace_min": "10", "no_charging_fee": "0", "min_occupancy_pct": "",
    "occupancy_recheck_min": "5", "return_ban_hours": "0", "return_ban_fee": "0", "confirmation_threshold": "0.99",
    "require_review": "no", "fuzzy_distance": "1", "camera_recover_min": "3",
    "schedule.days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "schedule.start": "00:00",
    "schedule.end": "00:00", "schedule.timezone": "UTC",
}


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[TestClient, str]]:
    settings = make_settings(tmp_path, sqlite_url, enforcement={
        "rules": {"idle_grace_min": 10}, "bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]})
    client = client_for(settings)
    add_user(settings, "op", Role.operator)
    add_user(settings, "view", Role.viewer)
    with client:
        yield client, login(client, "op")


def field_errors(html: str) -> dict[str, str]:
    """input id -> the error shown under it."""
    return dict(re.findall(r'id="[a-z]+-([a-z_.]+)-err">([^<]*)<', html))


def test_pages_render_full_and_as_fragment(env) -> None:
    client, _ = env
    for path in ("/dash/bays", "/dash/bays/B1", "/dash/rules"):
        full = client.get(path)
        assert full.status_code == 200 and "<html" in full.text and 'href="/dash/bays"' in full.text
        frag = client.get(path, headers={"HX-Request": "true"})
        assert frag.status_code == 200 and "<html" not in frag.text and "<h1>" in frag.text
    assert client.get("/dash/bays/NOPE").status_code == 404


def test_add_bay_through_the_form(env) -> None:
    client, csrf = env
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "B2", "kind": "bay", "charge_point_id": "CP1",
                                        "connector_id": "2", "idle_grace_min": "5", "max_stay_min": "none"})
    assert r.status_code == 303 and r.headers["location"].startswith("/dash/bays?msg=Bay+B2+added")
    bay = client.get("/api/v1/bays/B2").json()
    assert bay["rules"] == {"idle_grace_min": 5, "max_stay_min": None} and bay["connector_id"] == 2
    page = client.get("/dash/bays").text
    assert '<a href="/dash/bays/B2">B2</a>' in page and "idle_grace_min=5" in page


def test_bay_form_errors_are_shown_next_to_the_fields(env) -> None:
    client, csrf = env
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "bad id!", "idle_grace_min": "-5"})
    assert r.status_code == 422
    assert "bay_id" in field_errors(r.text) and 'value="bad id!"' in r.text
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "B3", "idle_grace_min": "-5"})
    assert r.status_code == 422 and "greater than or equal to 0" in field_errors(r.text)["idle_grace_min"]
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "B3", "out_url": "ftp://gate"})
    assert r.status_code == 422 and "http" in field_errors(r.text)["out_url"]
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "B3", "out_url": "http://gate",
                                        "out_headers": "no colon here"})
    assert r.status_code == 422 and "Name: value" in r.text
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "B3", "charge_point_id": "CP1",
                                        "connector_id": "1"})
    assert r.status_code == 422 and "already bay" in field_errors(r.text)["charge_point_id"]
    assert client.get("/api/v1/bays/B3").status_code == 404  # nothing half-written


def test_edit_and_delete_bay(env) -> None:
    client, csrf = env
    client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "G1", "kind": "bay"})
    r = client.post("/dash/bays/G1", data={
        "csrf_token": csrf, "kind": "access", "out_url": "http://127.0.0.1:9/open", "out_method": "PUT",
        "out_body": '{"plate": "{plate}"}', "out_headers": "Authorization: Basic abc", "own_schedule": "on",
        "schedule.days": ["mon", "fri"], "schedule.start": "08:00", "schedule.end": "18:00"})
    assert r.status_code == 303, r.text
    bay = client.get("/api/v1/bays/G1").json()
    assert bay["kind"] == "access" and bay["output"]["method"] == "PUT"
    assert bay["output"]["headers"] == {"Authorization": "Basic abc"}
    assert bay["rules"]["schedule"]["days"] == ["mon", "fri"] and bay["rules"]["schedule"]["start"] == "08:00:00"
    page = client.get("/dash/bays/G1").text  # the form comes back filled in
    assert 'value="08:00"' in page and "Basic abc" in page and 'value="mon" checked' in page
    assert 'value="tue" checked' not in page
    r = client.post("/dash/bays/G1/delete", data={"csrf_token": csrf})
    assert r.status_code == 303 and client.get("/api/v1/bays/G1").status_code == 404


def test_config_bay_has_no_edit_form(env) -> None:
    client, csrf = env
    page = client.get("/dash/bays/B1").text
    assert "config file" in page and "Save bay" not in page
    r = client.post("/dash/bays/B1", data={"csrf_token": csrf, "kind": "bay"})
    assert r.status_code == 422 and "change it there" in r.text


def test_site_rules_form(env) -> None:
    client, csrf = env
    page = client.get("/dash/rules").text
    assert 'name="idle_grace_min" value="10"' in page and "As in the config file" in page
    r = client.post("/dash/rules", data={"csrf_token": csrf, **SITE_FORM, "idle_grace_min": "20",
                                         "min_occupancy_pct": "50"})
    assert r.status_code == 303, r.text
    rules = client.get("/api/v1/rules").json()
    assert rules["overrides"] == {"idle_grace_min": 20, "min_occupancy_pct": 50.0}
    assert client.get("/api/v1/bays/B1").json()["effective_rules"]["idle_grace_min"] == 20
    page = client.get("/dash/rules").text
    assert "idle_grace_min, min_occupancy_pct" in page and "Reset to the config file" in page
    r = client.post("/dash/rules", data={"csrf_token": csrf, **SITE_FORM, "currency": "euro", "idle_grace_min": "",
                                         "schedule.timezone": "Mars/Base"})
    assert r.status_code == 422
    errors = field_errors(r.text)
    assert "currency" in errors and "idle_grace_min" in errors and "Mars/Base" in r.text
    assert client.get("/api/v1/rules").json()["overrides"]["idle_grace_min"] == 20  # unchanged
    r = client.post("/dash/rules/reset", data={"csrf_token": csrf})
    assert r.status_code == 303 and client.get("/api/v1/rules").json()["overrides"] == {}


def test_viewer_sees_but_cannot_change(env) -> None:
    client, csrf = env
    client.post("/logout", data={"csrf_token": csrf})
    csrf = login(client, "view")
    page = client.get("/dash/rules").text
    assert "Save site rules" not in page and "idle_grace_min" in page
    assert "Add bay" not in client.get("/dash/bays").text
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "B9"})
    assert r.status_code == 403 and client.get("/api/v1/bays/B9").status_code == 404
    assert client.post("/dash/rules", data={"csrf_token": csrf, **SITE_FORM}).status_code == 403


def test_csrf_and_escaping(env) -> None:
    client, csrf = env
    r = client.post("/dash/bays", data={"bay_id": "B9"})
    assert r.status_code == 403
    r = client.post("/dash/bays", data={"csrf_token": csrf, "bay_id": "B9",
                                        "charge_point_id": '<script>alert("x")</script>'})
    assert r.status_code == 303
    page = client.get("/dash/bays").text
    assert '<script>alert("x")</script>' not in page and "&lt;script&gt;" in page
