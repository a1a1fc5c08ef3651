"""The driver's notice page in a real headless Chromium, in the site's language (German here) and time
zone (Europe/Berlin): plain words for every step, times to the minute in local time, the billed period
exactly as billed, and a dispute sent from the page.

Leaves test-artifacts/screenshots/notice-de.png (git-ignored; CI keeps it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from itsdangerous import URLSafeTimedSerializer

from models.db import upgrade
from models.tables import Penalty
from tests.dashboard.browser import TIMEOUT_MS, shot
from tests.dashboard.seed import db_session, seed_rich_visit
from tests.foundation.helpers import LiveServer, free_port, make_settings

pytestmark = pytest.mark.slow
NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("notice")
    settings = make_settings(tmp, f"sqlite:///{tmp / 'dash.db'}", port=free_port(), site={"language": "de"},
                             enforcement={"rules": {"schedule": {"timezone": "Europe/Berlin"}},
                                          "bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]})
    upgrade(settings.db_url)
    seed_rich_visit(settings, NOW)
    with db_session(settings) as db:
        p = db.get(Penalty, "B1/p9/idle")
        p.state = "notice_issued"
        db.add(p)
        db.commit()
    live = LiveServer(settings).start()
    yield live
    live.stop()


def test_a_driver_reads_the_notice_in_german_local_time_and_disputes_it(browser: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    key = server.settings.security.secret_key.get_secret_value()
    token = URLSafeTimedSerializer(key, salt="driver-notice").dumps("B1/p9/idle")
    context = browser.new_context(base_url=server.url, viewport={"width": 390, "height": 844})  # a phone
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"/notice/{token}")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Parkhinweis")
        body = page.locator("body")
        expect(body).to_contain_text("EV123AB")
        expect(body).to_contain_text("Bescheid ausgestellt")
        # The billed idle period (seed: 50 to 60 minutes into a 70-minute visit that ended now), in
        # Berlin time to the minute.
        here = NOW.astimezone(ZoneInfo("Europe/Berlin"))
        for minutes_ago in (20, 10):
            expect(body).to_contain_text((here - timedelta(minutes=minutes_ago)).strftime("%H:%M"))
        text = body.inner_text()
        expect(body).to_contain_text("Standgebühr beendet (10 Minuten berechnet)")
        # No OCPP word, UTC offset or English engine detail on a German page.
        for raw in ("SuspendedEV", "EVDisconnected", "+00:00", "departed: departed", "1 minutes", "billed so far",
                    "from arrival", "transaction"):
            assert raw not in text, raw
        shot(page, "notice-de")
        page.get_by_label("Warum ist dieser Bescheid Ihrer Meinung nach falsch?").fill("Ich habe sofort umgeparkt.")
        page.get_by_role("button", name="Widerspruch senden").click()
        expect(body).to_contain_text("Ihr Widerspruch wurde gespeichert")
        expect(body).to_contain_text("Widerspruch eingelegt")
        shot(page, "notice-de-disputed")
        assert not errors, errors
    finally:
        context.close()
