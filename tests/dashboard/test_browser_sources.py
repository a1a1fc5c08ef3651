"""An admin adds an outside source on the Sources page in a real headless Chromium (server-side errors
shown next to their field), a real HTTP client posts a Plate Recognizer webhook to it, and the page
counts the read. Leaves test-artifacts/screenshots/source-add-error.png and sources-admin.png."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models.tables import Role
from tests.dashboard.browser import dashboard_server, htmx_ready, shot
from tests.foundation.helpers import LiveServer

pytestmark = pytest.mark.slow
SECRET = "pr-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with dashboard_server(tmp_path_factory.mktemp("sources"), "root", Role.admin,
                          enforcement={"bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]},
                          ) as live:
        yield live


@pytest.fixture
def dash_user() -> str:
    return "root"


@pytest.fixture
def start_path() -> str:
    return "/dash/sources"


def test_admin_adds_a_source_and_its_first_read_is_counted(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    htmx_ready(page)
    page.get_by_label("Name", exact=True).fill("gate-pr")
    page.get_by_label("Kind", exact=True).select_option("platerecognizer")
    page.get_by_label("Secret", exact=True).fill("short")
    page.get_by_label("Cameras → bays").fill("gate-2 = B1\nlane9 = NOPE")
    page.get_by_role("button", name="Add source").click()
    # Both mistakes are named next to their field; nothing was saved.
    expect(page.locator("#set-secret-err")).to_contain_text("16")
    expect(page.locator("#set-cameras-err")).to_contain_text("NOPE")
    shot(page, "source-add-error")
    page.get_by_label("Secret", exact=True).fill(SECRET)
    page.get_by_label("Cameras → bays").fill("gate-2 = B1")
    page.get_by_role("button", name="Add source").click()
    expect(page.get_by_role("status").first).to_contain_text("gate-pr")
    row = page.locator('tr[data-source="gate-pr"]')
    expect(row).to_contain_text("platerecognizer")
    # Where to point the camera or system, under its row.
    expect(page.locator('tr[data-source="gate-pr"] + tr.intake-row')).to_contain_text(
        "POST http://127.0.0.1:8080/api/v1/sources/gate-pr/platerecognizer")
    assert SECRET not in page.content()

    read = {"data": {"camera_id": "gate-2", "timestamp": "2026-12-06T09:01:02Z",
                     "results": [{"plate": "7abc123", "score": 0.9}]}}
    r = httpx.post(f"{server.url}/api/v1/sources/gate-pr/platerecognizer", json=read,
                   headers={"Authorization": f"Token {SECRET}"}, timeout=10)
    assert r.status_code == 200, r.text
    page.goto("/dash/sources")
    expect(page.locator('tr[data-source="gate-pr"] td').nth(2)).to_have_text("1")  # accepted
    shot(page, "sources-admin")
