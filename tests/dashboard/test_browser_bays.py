"""Bays and site rules in a real headless Chromium: add a bay with an override, see errors next to fields,
change a site rule, and see the bay's effective rules follow. Screenshots: bays.png, bay-edit.png, rules.png."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from models.tables import Role
from tests.dashboard.browser import dashboard_server, htmx_ready, shot
from tests.foundation.helpers import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with dashboard_server(
        tmp_path_factory.mktemp("dash-bays"), "op", Role.operator,
        cameras=[{"name": "north", "url": "rtsp://127.0.0.1:1/x", "enabled": False,
                  "zones": [{"bay_id": "B1", "polygon": [[0, 0], [100, 0], [100, 100]]},
                            {"bay_id": "B2", "polygon": [[200, 0], [300, 0], [300, 100]]}]}],
        enforcement={"rules": {"idle_grace_min": 10},
                     "bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]},
    ) as live:
        yield live


@pytest.fixture
def start_path() -> str:
    return "/dash/bays"


def test_add_bay_then_change_site_rules(page: Any) -> None:
    from playwright.sync_api import expect

    htmx_ready(page)
    form = page.locator("form[action='/dash/bays']")
    form.get_by_label("Bay id").fill("B2")
    form.get_by_label("Charge point id").fill("CP1")
    form.get_by_label("Connector id").fill("1")  # B1's outlet: refused
    form.locator("summary", has_text="Rule overrides").click()
    form.get_by_label("Idle grace (minutes)").fill("-4")
    form.get_by_role("button", name="Add bay").click()
    expect(page.locator("#bay-idle_grace_min-err")).to_contain_text("greater than or equal to 0")
    form = page.locator("form[action='/dash/bays']")
    form.get_by_label("Idle grace (minutes)").fill("5")
    form.get_by_role("button", name="Add bay").click()
    expect(page.locator("#bay-charge_point_id-err")).to_contain_text("already bay 'B1'")
    form = page.locator("form[action='/dash/bays']")
    form.get_by_label("Connector id").fill("2")
    form.get_by_role("button", name="Add bay").click()
    expect(page.get_by_role("status")).to_contain_text("Bay B2 added")
    row = page.locator("tbody tr", has_text="B2")
    expect(row).to_contain_text("CP1 · connector 2")
    expect(row).to_contain_text("north")
    expect(row).to_contain_text("idle_grace_min=5")
    shot(page, "bays")

    page.get_by_role("link", name="B2", exact=True).click()
    expect(page.get_by_role("heading", name="Bay B2", level=1)).to_be_visible()
    shot(page, "bay-edit")

    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Rules").click()
    expect(page.get_by_role("heading", name="Site rules", level=1)).to_be_visible()
    page.get_by_label("Maximum stay (minutes)").fill("180")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_role("button", name="Save site rules").click()
    expect(page.get_by_role("status")).to_contain_text("Site rules saved")
    expect(page.get_by_text("Changed here, differing from the config file: max_stay_min, schedule")).to_be_visible()
    shot(page, "rules")

    page.goto("/dash/bays/B2")
    facts = page.locator("section[aria-labelledby='rules-h']")
    expect(facts).to_contain_text("180")
    expect(facts).to_contain_text("Europe/Berlin")
