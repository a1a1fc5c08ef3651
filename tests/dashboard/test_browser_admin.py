"""The admin and figures pages in a real headless Chromium against the real app on a real port.

Screenshots go to test-artifacts/screenshots/ (users.png, charts.png)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from models.db import make_engine
from models.tables import Role, VisitRow
from tests.dashboard.browser import dashboard_server, log_in, shot
from tests.foundation.helpers import PASSWORD, LiveServer


def seed_week(db_url: str, now: datetime) -> None:
    """A week of visits on three bays: charging, then some idle time after charging completed."""
    engine = make_engine(db_url)
    with Session(engine) as db:
        for day in range(7):
            for n, bay in enumerate(("B1", "B2", "B3")):
                start = (now - timedelta(days=day)).replace(hour=7 + 2 * n, minute=0, second=0, microsecond=0)
                if start >= now:
                    continue
                hours, idle_h = 2 + (day + n) % 5, (day * (n + 1)) % 3
                end = start + timedelta(hours=hours + idle_h)
                timeline = [{"at": start.isoformat(), "what": "linked", "detail": ""},
                            {"at": (start + timedelta(hours=hours)).isoformat(), "what": "idle", "detail": ""}]
                db.add(VisitRow(visit_id=f"{bay}/d{day}", bay_id=bay, arrived_at=start,
                                departed_at=end if end < now else None, updated_at=now,
                                data={"timeline": timeline}))
        db.commit()
    engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with dashboard_server(tmp_path_factory.mktemp("dash-admin"), "boss", Role.admin,
                          seed=lambda cfg: seed_week(cfg.db_url, datetime.now(UTC))) as live:
        yield live


@pytest.fixture
def dash_user() -> str:
    return "boss"


@pytest.fixture
def start_path() -> str:
    return "/dash/users"


def test_create_user_through_the_page_then_switch_to_it(page: Any) -> None:
    from playwright.sync_api import expect

    add = page.locator("form[action='/dash/users']")
    add.get_by_label("User name").fill("carol")
    add.get_by_label("Full name").fill("Carol Night-shift")
    add.get_by_label("E-mail (optional)").fill("carol@example")
    add.get_by_label("Role").select_option("operator")
    add.get_by_label("Password").fill("short")
    add.get_by_role("button", name="Add user").click()
    # Server-side errors, next to their fields, the rest of the input kept.
    expect(page.locator("#nu-password-err")).to_contain_text("at least 10")
    expect(page.locator("#nu-email-err")).to_be_visible()
    expect(page.locator("form[action='/dash/users']").get_by_label("User name")).to_have_value("carol")
    add = page.locator("form[action='/dash/users']")
    add.get_by_label("E-mail (optional)").fill("carol@example.com")
    add.get_by_label("Password").fill(PASSWORD)
    add.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("status")).to_contain_text("User carol created")
    row = page.locator("#users tr[data-user='carol']")
    expect(row).to_contain_text("operator")
    expect(row).to_contain_text("carol@example.com")
    row.locator("summary").click()
    expect(row.get_by_label("Role")).to_have_value("operator")
    shot(page, "users")

    # Switch user keeps the page to come back to; carol is an operator, so she gets the outbox, not users.
    page.locator(".user-menu summary").click()
    page.get_by_role("button", name="Switch user").click()
    page.wait_for_url(re.compile(r"/login\?next=%2Fdash%2Fusers$"))
    expect(page.locator("input[name='next']")).to_have_value("/dash/users")
    page.goto("/login?next=/dash/outbox")
    log_in(page, "carol")
    page.wait_for_url("**/dash/outbox")
    expect(page.get_by_role("heading", name="Outbox", level=1)).to_be_visible()


def test_charts_page(page: Any) -> None:
    from playwright.sync_api import expect

    page.goto("/dash/charts")
    expect(page.get_by_role("heading", name="Occupancy and idle time", level=1)).to_be_visible()
    charts = page.locator("svg.bay-chart")
    expect(charts).to_have_count(3)
    expect(page.get_by_role("img", name="Bay B1: occupancy and idle time per day")).to_be_visible()
    assert page.locator("svg.bay-chart rect.bar-occ").count() >= 15
    assert page.locator("svg.bay-chart rect.bar-idle").count() >= 5
    expect(page.locator("#chart-data tbody tr")).to_have_count(21)
    page.get_by_label("Bay", exact=True).select_option("B2")
    page.get_by_role("button", name="Show").click()
    expect(charts).to_have_count(1)
    page.get_by_label("Bay", exact=True).select_option("")
    page.get_by_role("button", name="Show").click()
    expect(charts).to_have_count(3)
    shot(page, "charts")
