"""Browser fixtures for tests/dashboard: one Chromium per module, one logged-in page per test.

A browser test module defines a `server` fixture (a LiveServer); it may override `dash_user`
(who logs in) and `start_path` (where the login lands)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import need
from tests.dashboard.browser import ARGS, CHROMIUM, TIMEOUT_MS, log_in


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread while it is
# open, and later test modules call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    need(importlib.util.find_spec("playwright") is not None, "pip install playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def dash_user() -> str:
    return "op"


@pytest.fixture
def start_path() -> str:
    return "/dash"


@pytest.fixture
def page(browser: Any, server: Any, dash_user: str, start_path: str) -> Iterator[Any]:
    """A fresh browser context logged in as `dash_user`, on `start_path`; fails the test on any JS error."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"/login?next={start_path}")
    log_in(pg, dash_user)
    pg.wait_for_url(f"**{start_path}")
    pg.wait_for_function("() => window.htmx !== undefined")
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"
