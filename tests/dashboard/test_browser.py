"""The dashboard in a real headless Chromium against the real app on a real port.

Each test leaves a screenshot in test-artifacts/screenshots/ (git-ignored; CI keeps it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from models.db import upgrade
from models.tables import Role
from tests.dashboard.browser import htmx_ready, shot
from tests.dashboard.seed import add_alert, seed_penalty
from tests.foundation.helpers import LiveServer, add_user, free_port, make_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("dash")
    settings = make_settings(tmp, f"sqlite:///{tmp / 'dash.db'}", port=free_port())
    upgrade(settings.db_url)
    add_user(settings, "op", Role.operator)
    live = LiveServer(settings).start()
    yield live
    live.stop()


def test_login_and_overview(page: Any) -> None:
    from playwright.sync_api import expect

    htmx_ready(page)
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page.locator("#count-reads")).to_have_text("0")
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Cameras").click()
    expect(page.get_by_role("heading", name="Cameras", level=1)).to_be_visible()
    assert page.evaluate("document.title").startswith("Cameras")  # htmx swapped <main> and the title
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Open alerts")).to_be_visible()
    shot(page, "overview")


def test_add_camera_with_server_side_errors(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/dash/cameras")
    htmx_ready(page)
    page.get_by_label("Stream URL", exact=True).fill("rtsp://")
    page.get_by_role("button", name="Add camera").click()
    expect(page.locator("#cam-name-err")).to_be_visible()
    expect(page.locator("#cam-url-err")).to_contain_text("at least 8")
    expect(page.get_by_label("Stream URL", exact=True)).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Name").fill("gate-1")
    page.get_by_label("Stream URL", exact=True).fill("rtsp://10.0.0.5/stream1")
    page.get_by_role("button", name="Add camera").click()
    expect(page.get_by_role("status")).to_contain_text("Camera gate-1 added")
    expect(page.locator("tr[data-camera='gate-1']")).to_contain_text("recognition off")
    shot(page, "cameras")


def test_blacklist_entry_then_live_alert_pops_up(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    page.goto("/dash/lists/blacklist")
    htmx_ready(page)
    page.get_by_label("Plate", exact=True).fill("ab-123-cd")
    page.get_by_label("Owner", exact=True).fill('<img src=x onerror="alert(1)">')
    page.get_by_label("Reason", exact=True).fill("stolen")
    page.get_by_role("button", name="Add to blacklist").click()
    row = page.locator("#entries tbody tr", has_text="AB123CD")
    expect(row).to_contain_text('<img src=x onerror="alert(1)">')  # shown as text, not markup
    # The live path: an alert row appears; the SSE stream delivers it; the page pops it up and beeps.
    page.evaluate("""() => { window.__beeps = 0; const o = AudioContext.prototype.createOscillator;
        AudioContext.prototype.createOscillator = function () { window.__beeps++; return o.call(this); }; }""")
    add_alert(server.settings, datetime.now(UTC), title="Blacklisted vehicle <AB123CD>", subject="AB123CD")
    pop = page.locator("#alert-pop [role=alert]")
    expect(pop).to_contain_text("Blacklisted vehicle <AB123CD>")
    expect(pop).to_contain_text("AB123CD · seen at bay B1")
    page.wait_for_function("() => window.__beeps > 0")
    shot(page, "blacklist-alert")
    pop.get_by_role("button", name="Dismiss").click()
    expect(pop).to_have_count(0)


def test_review_and_issue_penalty(page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    seed_penalty(server.settings, datetime.now(UTC))
    page.goto("/dash/penalties")
    htmx_ready(page)
    card = page.locator("article.penalty")
    expect(card).to_contain_text("plate unreadable")
    expect(card.locator(".timeline")).to_contain_text("idle for 30 minutes")
    img = card.get_by_role("img")
    expect(img).to_be_visible()
    page.wait_for_function("() => document.querySelector('article.penalty img').naturalWidth > 0")
    shot(page, "penalty-review")
    card.get_by_label("Confirm the plate as shown on the evidence").fill("xy 987 zz")
    card.get_by_role("button", name="Issue notice").click()
    expect(page.get_by_role("status")).to_have_text("Penalty issued")
    page.get_by_label("State").select_option("notice_issued")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("article.penalty")).to_contain_text("XY987ZZ")
    shot(page, "penalty-issued")


def test_csv_import_shows_bad_row(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/dash/lists/whitelist")
    htmx_ready(page)
    csv = b"plate,owner,priority\nEV001AA,Fleet,3\n!,Nobody,2\nEV002BB,Fleet,4\n"
    page.get_by_label("CSV file").set_input_files({"name": "fleet.csv", "mimeType": "text/csv", "buffer": csv})
    page.get_by_role("button", name="Check file (dry run)").click()
    errors = page.locator("table.import-errors")
    expect(errors).to_contain_text("3")
    expect(errors.locator("tbody tr")).to_have_count(1)
    expect(errors).to_contain_text("plate")
    expect(page.get_by_role("button", name="Confirm import")).to_have_count(0)
    shot(page, "csv-import-errors")
    good = b"plate,owner,priority\nEV001AA,Fleet,3\nEV002BB,Fleet,4\n"
    page.get_by_label("CSV file").set_input_files({"name": "fleet.csv", "mimeType": "text/csv", "buffer": good})
    page.get_by_role("button", name="Check file (dry run)").click()
    page.get_by_role("button", name="Confirm import of 2 rows").click()
    expect(page.get_by_role("status")).to_have_text("2 entries imported")
    expect(page.locator("#entries")).to_contain_text("EV002BB")
    shot(page, "csv-imported")


@pytest.mark.parametrize("path,heading", [("/dash/reads", "Reads log"), ("/dash/visits", "Visits"),
                                          ("/dash/chargers", "Chargers"), ("/dash/outbox", "Outbox"),
                                          ("/dash/audit", "Audit log"), ("/dash/sources", "Outside sources"),
                                          ("/dash/penalties", "Penalties")])
def test_other_pages_render(page: Any, path: str, heading: str) -> None:
    from playwright.sync_api import expect

    page.goto(path)
    expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
    shot(page, path.rsplit("/", 1)[-1])


def test_keyboard_navigation(page: Any) -> None:
    from playwright.sync_api import expect

    htmx_ready(page)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    nav = page.get_by_role("navigation", name="Dashboard")
    nav.get_by_role("link", name="Penalties").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Penalties", level=1)).to_be_visible()
    expect(page.locator("main")).to_be_focused()  # focus follows the swapped content


def test_navigation_fits_one_row_at_1366_and_the_admin_pages_sit_in_one_menu(page: Any) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1366, "height": 768})
    htmx_ready(page)
    nav = page.get_by_role("navigation", name="Dashboard")
    items = nav.locator(":scope > a, :scope > details > summary")
    boxes = [items.nth(i).bounding_box() for i in range(items.count())]
    middles = [b["y"] + b["height"] / 2 for b in boxes]
    assert items.count() >= 10 and max(middles) - min(middles) < 4, boxes  # one row
    header = page.locator("header.top").bounding_box()
    assert header["height"] < 60, header  # the log-out forms sit on the same row too
    expect(nav.get_by_role("link", name="Audit")).to_be_hidden()
    nav.get_by_text("Admin").click()
    nav.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    expect(nav.get_by_role("link", name="Audit")).to_be_hidden()  # the menu closed behind the click
    nav.get_by_role("link", name="Lists").click()
    expect(page.get_by_role("heading", name="Whitelist", level=1)).to_be_visible()
    expect(nav.get_by_role("link", name="Lists")).to_have_attribute("aria-current", "page")
    page.get_by_role("navigation", name="Lists").get_by_role("link", name="Blacklist").click()
    expect(page.get_by_role("heading", name="Blacklist", level=1)).to_be_visible()
    shot(page, "navigation-1366")
