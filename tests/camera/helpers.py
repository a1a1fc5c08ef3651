"""Test helpers for the camera suite: the RTSP server process, a fake clock, polling."""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
# Built by fixtures/make_fixtures.py from the committed photo fixtures/bay_car.jpg (MIT) on first use.
CLIP = REPO / "test-artifacts" / "fixtures" / "bay_arrival_v3.mp4"
CLIP_PLATE = "B99BNX"  # the plate in fixtures/bay_car.jpg, the photo the clip is made from
CLIP_BAY = [(200.0, 200.0), (780.0, 200.0), (780.0, 640.0), (200.0, 640.0)]  # fixtures/make_fixtures.py
SERVER = REPO / "anpr" / "rtsp_server.py"
DEBIAN_PYTHON = "/usr/bin/python3"
IN_CI = os.environ.get("CI", "").lower() == "true"
T = TypeVar("T")


def need(condition: bool, reason: str) -> None:
    """Skip when a real component is missing on a developer machine; fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


# The same scene with a US plate crop (plate-crops-us, val split, California) pasted over the EU plate.
US_CROP = REPO.parent / "shared" / "datasets" / "plate-crops-us" / "images" / "us_ca350.jpg"
US_PLATE = "6MBV006"
US_CLIP = CLIP.parent / "bay_arrival_us_v3.mp4"


def ensure_us_clip() -> Path:
    """The US-plate clip, built from ../shared on first use (it is not committed)."""
    need(US_CROP.is_file(), f"{US_CROP} is needed (../shared/datasets)")
    if not US_CLIP.is_file():
        need(shutil.which("ffmpeg") is not None, "ffmpeg is needed to build the camera test clip")
        US_CLIP.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), "--out", str(US_CLIP.parent),
                        "--plate", str(US_CROP), "--name", US_CLIP.name], check=True, capture_output=True, timeout=300)
    return US_CLIP


def ensure_clip() -> Path:
    """The camera tests' clip, built from the committed photo on first use (the clip itself is not committed)."""
    if not CLIP.is_file():
        need(shutil.which("ffmpeg") is not None, "ffmpeg is needed to build the camera test clip")
        CLIP.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), "--out", str(CLIP.parent),
                        "--name", CLIP.name], check=True,
                       capture_output=True, timeout=300)
    return CLIP


@functools.cache
def gstreamer_missing() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or None when it can."""
    if not Path(DEBIAN_PYTHON).exists():
        return f"{DEBIAN_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "need=('filesrc','qtdemux','h264parse','rtph264pay');"
        "missing=[e for e in need if not Gst.ElementFactory.find(e)];"
        "print(' '.join(missing))"
    )
    try:
        out = subprocess.run([DEBIAN_PYTHON, "-P", "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {DEBIAN_PYTHON}: {exc}"
    if out.returncode != 0:
        return (
            "GStreamer RTSP server bindings missing (apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi)"
        )
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()} (gstreamer1.0-plugins-good/-bad)"
    return None


def need_gstreamer() -> None:
    reason = gstreamer_missing()
    need(reason is None, reason or "")


class RtspServer:
    """`anpr/rtsp_server.py` as a child process, restartable on the same port."""

    def __init__(self, clip: Path = CLIP, *, auth: str | None = None, mount: str = "cam") -> None:
        self.clip, self.auth, self.mount = clip, auth, mount
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        cred = f"{self.auth}@" if self.auth else ""
        return f"rtsp://{cred}127.0.0.1:{self.port}/{self.mount}"

    def start(self, timeout: float = 20.0) -> RtspServer:
        cmd = [DEBIAN_PYTHON, "-P", str(SERVER), str(self.clip), "--loop", "--port", str(self.port)]
        cmd += ["--mount", self.mount] + (["--auth", self.auth] if self.auth else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""  # READY line, or "" if it died
        if not line.startswith("READY "):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"RTSP server did not start: {line!r} {err[-500:]}")
        self.port = int(line.split()[1].rsplit(":", 1)[1].split("/")[0])
        return self

    def kill(self) -> None:
        """SIGKILL: the camera vanishes without saying goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None


def wait_until(fn: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now
