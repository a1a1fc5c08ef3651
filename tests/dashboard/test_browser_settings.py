"""The mail settings page in a real headless Chromium: an admin points the running service at an SMTP
server (aiosmtpd), sends a test e-mail and watches it go out through the scheduler's outbox job.

Leaves test-artifacts/screenshots/settings.png (git-ignored; CI keeps it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from models.tables import Role
from tests.dashboard.browser import dashboard_server, shot
from tests.foundation.helpers import LiveServer
from tests.notifications.servers import SmtpServer


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("settings")
    # The scheduler runs (its outbox job every second), the rest stays off: the mail goes out for real.
    with dashboard_server(tmp, "root", Role.admin, app_kw={"components": None},
                          components={"scheduler": True, "cameras": False, "enforcement": False, "relay": False},
                          notifications={"dispatch_every_s": 1}) as live:
        yield live


@pytest.fixture
def dash_user() -> str:
    return "root"


def test_edit_mail_server_and_send_a_test_email(page: Any, smtp: SmtpServer) -> None:
    from playwright.sync_api import expect

    page.goto("/dash/settings/mail")
    page.wait_for_function("() => window.htmx !== undefined")
    expect(page.locator("#mail-state")).to_contain_text("off")
    page.get_by_label("SMTP server").fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill("0")
    page.get_by_label("Transport security").select_option("none")
    page.get_by_label("Sender address").fill("bays@example.org")
    page.get_by_role("button", name="Save mail settings").click()
    expect(page.locator("#set-port-err")).to_be_visible()  # the 422 answer, swapped in by htmx
    expect(page.get_by_label("Port", exact=True)).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Port", exact=True).fill(str(smtp.port))
    page.get_by_role("button", name="Save mail settings").click()
    expect(page.get_by_role("status").first).to_have_text("Mail settings saved")
    expect(page.locator("#mail-state")).to_contain_text(f"127.0.0.1:{smtp.port}")

    page.get_by_label("Recipient").fill("ops@example.org")
    page.get_by_role("button", name="Send test e-mail").click()
    expect(page.get_by_role("link", name="see the outbox")).to_be_visible()
    # The scheduler's outbox job sends it; the state on the page follows by polling.
    expect(page.locator("#test-state-value")).to_have_text("sent", timeout=20_000)
    deadline = time.monotonic() + 5
    while not smtp.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    (got,) = smtp.messages
    assert got.rcpt_tos == ["ops@example.org"] and "test e-mail" in got.message["Subject"]
    shot(page, "settings")
