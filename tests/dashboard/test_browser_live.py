"""The live overview and the visit page in a real headless Chromium against the real app on a real port:
rows stored server-side appear on the open overview without a reload (SSE for alerts, polling for bays).
Screenshots: overview-live.png, visit-timeline.png."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from models.db import make_engine
from models.tables import BayStateRow, Role
from tests.dashboard.browser import dashboard_server, htmx_ready, shot
from tests.dashboard.seed import add_alert, seed_rich_visit, seed_visit
from tests.foundation.helpers import LiveServer

POLL_WAIT_MS = 15_000  # the overview polls every 5 s; allow for a slow, shared machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with dashboard_server(tmp_path_factory.mktemp("dash-live"), "op", Role.operator,
                          enforcement={"bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1},
                                                {"bay_id": "B2", "charge_point_id": "CP1", "connector_id": 2}]},
                          ) as live:
        yield live


def car_in_bay(settings: Any, bay: str, visit_id: str, plate: str, arrived: datetime, tx: str) -> None:
    """What the engine stores when a car arrives and its charging session starts."""
    seed_visit(settings, visit_id, bay, plate, arrived)
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.merge(BayStateRow(bay_id=bay, updated_at=arrived, state={
            "visit": {"visit_id": visit_id, "plate": plate, "arrived_at": arrived.isoformat()},
            "tx": {"charge_point_id": "CP1", "transaction_id": tx, "charging": True}}))
        db.commit()
    engine.dispose()


def test_overview_updates_without_reload(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    htmx_ready(page)
    b1 = page.locator("#overview-bays tr[data-bay='B1']")
    expect(b1).to_contain_text("free")
    expect(page.locator("#overview-alerts")).to_contain_text("No open alerts")
    page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads

    now = datetime.now(UTC)
    add_alert(server.settings, now, title="Blacklisted vehicle BL4CK1", subject="BL4CK1")
    # The SSE alert refreshes the alerts section and the counts at once (no waiting for the poll).
    expect(page.locator("#overview-alerts tbody")).to_contain_text("Blacklisted vehicle BL4CK1")
    expect(page.locator("#count-alerts")).to_have_text("1")
    car_in_bay(server.settings, "B1", "B1/live1", "EV42LIV", now - timedelta(minutes=12), "T-77")
    expect(b1).to_contain_text("EV42LIV", timeout=POLL_WAIT_MS)
    expect(b1.locator(".badge")).to_have_text("charging")
    expect(page.locator("#count-cars")).to_have_text("1", timeout=POLL_WAIT_MS)
    assert page.evaluate("() => window.__sameDocument === true")
    # Polling pauses while focus is inside the section (a keyboard user's place is not swapped away).
    b2 = page.locator("#overview-bays tr[data-bay='B2']")
    b1.get_by_role("link", name="Visit at bay B1").focus()
    car_in_bay(server.settings, "B2", "B2/live2", "EV43LIV", now - timedelta(minutes=3), "T-78")
    page.wait_for_timeout(7_000)
    expect(b2).to_contain_text("free")
    page.evaluate("() => document.activeElement.blur()")
    expect(b2).to_contain_text("EV43LIV", timeout=POLL_WAIT_MS)
    page.locator("#alert-pop [role=alert] button").click()  # dismiss the pop-up before the picture
    shot(page, "overview-live")

    # The bay's visit link opens the visit page inside <main> (boosted), not inside the bays section.
    b1.get_by_role("link", name="Visit at bay B1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("EV42LIV")
    expect(page.locator("#overview-bays")).to_have_count(0)
    expect(page.locator("svg.timeline-svg g.seg")).to_have_count(1)
    assert page.evaluate("() => window.__sameDocument === true")


def test_visit_timeline_picture(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    vid = seed_rich_visit(server.settings, datetime.now(UTC).replace(microsecond=0))
    page.goto("/dash/visits")
    htmx_ready(page)
    page.get_by_label("Plate").fill("EV123AB")
    page.get_by_role("button", name="Filter").click()
    card = page.locator(f"details[data-visit='{vid}']")
    card.locator("summary").click()
    card.get_by_role("link", name="Open the visit").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("EV123AB")
    svg = page.locator("svg.timeline-svg")
    expect(svg.locator("g.seg")).to_have_count(4)
    expect(svg.locator("g.viol[data-kind='idle']")).to_have_count(1)
    box = svg.bounding_box()
    assert box is not None and box["width"] > 600  # the picture fills the card
    page.wait_for_function("() => [...document.querySelectorAll('img.evidence')].every(i => i.naturalWidth > 0)")
    expect(page.locator("img.evidence")).to_have_count(2)
    expect(page.get_by_text("12.35 kWh")).to_be_visible()
    shot(page, "visit-timeline")
