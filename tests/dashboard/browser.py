"""Helpers for the dashboard's real-browser tests (headless Debian Chromium driven by Playwright).

Screenshots land in test-artifacts/screenshots/ (git-ignored; CI keeps them as artifacts)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.db import upgrade
from models.settings import Settings
from models.tables import Role
from tests.conftest import REPO
from tests.foundation.helpers import PASSWORD, LiveServer, add_user, free_port, make_settings

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


@contextmanager
def dashboard_server(tmp: Path, user: str, role: Role, seed: Callable[[Settings], object] | None = None,
                     app_kw: dict[str, Any] | None = None, **settings: Any) -> Iterator[LiveServer]:
    """The real app on a free port over a fresh SQLite database with one user (and `seed` run on the
    settings before it starts): what every browser test module serves its pages from."""
    cfg = make_settings(tmp, f"sqlite:///{tmp / 'dash.db'}", port=free_port(), **settings)
    upgrade(cfg.db_url)
    add_user(cfg, user, role)
    if seed is not None:
        seed(cfg)
    live = LiveServer(cfg, **(app_kw or {})).start()
    try:
        yield live
    finally:
        live.stop()
