"""Capture without a camera: URL redaction, frame dropping, and failures turned into states.

The garbage and silent servers here are real TCP listeners read through OpenCV/FFmpeg."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time

import numpy as np
import pytest

from anpr.capture import CaptureOptions, FrameGrabber
from models.logsetup import RedactingFilter, redact, redact_url

from .helpers import wait_until

FAST = CaptureOptions(
    open_timeout_s=2, read_timeout_s=2, stale_after_s=1, backoff_initial_s=0.2, backoff_max_s=1
)


@pytest.mark.parametrize(
    "url,expected",
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/Streaming/101", "rtsp://***@10.0.0.5:554/Streaming/101"),
        ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
        ("rtsp://onlyuser@cam/live", "rtsp://***@cam/live"),
        ("rtsp://u:p%40ss@cam/live", "rtsp://***@cam/live"),
        ("http://cam/cgi?user=admin&password=hunter2&ch=1", "http://cam/cgi?user=***&password=***&ch=1"),
        ("file:///tmp/clip.mp4", "file:///tmp/clip.mp4"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redacting_filter_scrubs_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redact")
    handler_filter = RedactingFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        logger.warning("failed %s", "rtsp://admin:hunter2@cam/live")
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert "hunter2" not in caplog.text and "rtsp://***@cam/live" in caplog.text
    assert redact("x rtsps://a:b@h/p y") == "x rtsps://***@h/p y"


class FakeCapture:
    """Scripted cv2.VideoCapture: a list of (ok, image) results, then end of stream."""

    def __init__(self, script: list, opened: bool = True) -> None:
        self.script, self.opened, self.released = list(script), opened, False

    def isOpened(self) -> bool:  # OpenCV's spelling
        return self.opened

    def read(self):
        if not self.script:
            return False, None
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        time.sleep(0.005)
        return item

    def release(self) -> None:
        self.released = True


IMG = np.zeros((48, 64, 3), np.uint8)


def test_keeps_newest_frame_and_counts_drops() -> None:
    grabber = FrameGrabber("rtsp://cam/x", FAST, opener=lambda *_: FakeCapture([(True, IMG)] * 20))
    grabber.start()
    wait_until(lambda: grabber.stats().frames_in == 20, 5, what="20 frames")
    frame = grabber.latest()
    assert frame is not None and frame.seq == 20
    assert grabber.latest() is None  # already handed out
    assert grabber.stats().frames_dropped == 19
    grabber.stop()


def test_corrupt_frames_and_exceptions_become_states() -> None:
    opens = []

    def opener(url, opts):
        opens.append(url)
        if len(opens) == 1:  # decoder hands back junk, then OpenCV raises
            return FakeCapture(
                [(True, IMG), (True, None), (True, np.zeros((2, 2), np.uint8)), RuntimeError("boom")]
            )
        return FakeCapture([(True, IMG)] * 1000)

    seen: list[str] = []
    grabber = FrameGrabber("rtsp://u:pw@cam/x", FAST, opener=opener, on_state=lambda s, d: seen.append(s))
    grabber.start()
    wait_until(lambda: len(opens) >= 2 and grabber.stats().state == "running", 5, what="reopen")
    st = grabber.stats()
    assert st.frames_corrupt == 2 and st.reconnects >= 1
    assert seen[:4] == ["starting", "running", "reconnecting", "running"]
    grabber.stop()
    assert grabber.stats().state == "stopped"


def test_never_opening_camera_backs_off_with_a_clear_state() -> None:
    times: list[float] = []

    def opener(url, opts):
        times.append(time.monotonic())
        return FakeCapture([], opened=False)

    grabber = FrameGrabber("rtsp://admin:hunter2@cam/x", FAST, opener=opener)
    grabber.start()
    wait_until(lambda: len(times) >= 4, 10, what="four attempts")
    st = grabber.stats()
    grabber.stop()
    assert st.state == "reconnecting"
    assert "cannot open rtsp://***@cam/x" in st.detail and "hunter2" not in st.detail
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] > gaps[0] * 1.5  # exponential backoff
    assert max(gaps) < FAST.backoff_max_s + 0.5  # capped


def _serve(handler) -> tuple[int, threading.Event]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    done = threading.Event()

    def loop() -> None:
        conns = []
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            handler(conn)
        for c in conns:
            c.close()
        srv.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], done


@pytest.mark.parametrize(
    "name,handler",
    [
        ("garbage", lambda c: c.sendall(os.urandom(4096))),  # speaks, but not RTSP
        ("silent", lambda c: None),  # accepts and never answers
    ],
)
def test_bad_streams_through_ffmpeg_become_states(name: str, handler) -> None:
    port, done = _serve(handler)
    grabber = FrameGrabber(f"rtsp://admin:hunter2@127.0.0.1:{port}/cam", FAST)
    try:
        grabber.start()
        st = wait_until(
            lambda: (s := grabber.stats()).state == "reconnecting" and s, 15, what=f"{name} -> reconnecting"
        )
        assert "cannot open rtsp://***@127.0.0.1" in st.detail or "no decodable frame" in st.detail
        assert "hunter2" not in st.detail
        assert grabber._thread is not None and grabber._thread.is_alive()
    finally:
        grabber.stop()
        done.set()
