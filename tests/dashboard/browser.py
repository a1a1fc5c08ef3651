"""Helpers for the dashboard's real-browser tests (headless Debian Chromium driven by Playwright).

Screenshots land in test-artifacts/screenshots/ (git-ignored; CI keeps them as artifacts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import REPO
from tests.foundation.helpers import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
TIMEOUT_MS = 10_000


def shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def htmx_ready(pg: Any) -> None:
    pg.wait_for_function("() => window.htmx !== undefined && document.body.dataset.alertsLive === 'yes'")


def log_in(pg: Any, user: str, password: str = PASSWORD) -> None:
    """Fill and send the login form the page is on."""
    pg.get_by_label("User name").fill(user)
    pg.get_by_label("Password").fill(password)
    pg.get_by_role("button", name="Log in").click()
