"""Builds the camera test clip from the committed photo once per machine (the clip is not committed)."""

from __future__ import annotations

import pytest

from .helpers import ensure_clip


@pytest.fixture(scope="session", autouse=True)
def bay_arrival_clip() -> None:
    ensure_clip()
