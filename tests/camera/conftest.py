"""Builds the camera test clip from ../shared/datasets once per machine (it is not committed)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .helpers import CLIP, FIXTURES, need


@pytest.fixture(scope="session", autouse=True)
def bay_arrival_clip() -> None:
    if CLIP.is_file():
        return
    need(shutil.which("ffmpeg") is not None, "ffmpeg is needed to build the camera test clip")
    CLIP.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), "--out", str(CLIP.parent)], check=True,
                   capture_output=True, timeout=300)
