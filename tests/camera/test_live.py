"""End to end on real pieces: a GStreamer RTSP server, OpenCV/FFmpeg capture, worker processes
started by the supervisor, real OCR. The clip is a real dev photo of a car that reverses into the
bay, stays, and leaves (fixtures/make_fixtures.py)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import time
from pathlib import Path

import pytest

from anpr.capture import CaptureOptions, FrameGrabber
from anpr.grouping import GroupingOptions
from anpr.motion import MotionOptions
from anpr.supervisor import CameraSupervisor
from anpr.worker import WorkerOptions
from models.events import CameraStateChanged, VehicleArrived, VehicleDeparted, VehicleStillPresent
from models.settings import BayZone, CameraSettings

from .helpers import CLIP_BAY, CLIP_PLATE, RtspServer, need_gstreamer, wait_until
from .recognizers import BrokenFor, make_hanging_recognizer, make_null_recognizer, make_plate_recognizer

pytestmark = pytest.mark.slow

CAPTURE = CaptureOptions(
    open_timeout_s=4, read_timeout_s=2, stale_after_s=2, backoff_initial_s=0.3, backoff_max_s=1
)
OPTIONS = WorkerOptions(
    capture=CAPTURE,
    motion=MotionOptions(settle_s=3, check_interval_s=2),
    grouping=GroupingOptions(min_agreeing=3, arrival_timeout_s=10, depart_after_s=3, heartbeat_s=3),
)
SECRET = "hunter2"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    need_gstreamer()
    srv = RtspServer(auth=f"admin:{SECRET}").start()
    yield srv
    srv.stop()


class Events:
    """The supervisor's event sink: collects everything, lets the test wait for one kind."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self.all: list = []

    def __call__(self, event) -> None:
        self.q.put(event)

    def wait_for(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            self.all.append(event)
            if pred(event):
                return event
        raise AssertionError(f"no {what} within {timeout:.0f} s; got {[type(e).__name__ for e in self.all]}")


def camera(url: str, name: str = "bay-cam", **kw) -> CameraSettings:
    return CameraSettings(name=name, url=url, fps=5, zones=[BayZone(bay_id="B1", polygon=CLIP_BAY)], **kw)


def test_arrival_and_departure_from_rtsp(server: RtspServer, tmp_path: Path, caplog, capfd) -> None:
    events = Events()
    sup = CameraSupervisor(
        [camera(server.url)], make_plate_recognizer, events, tmp_path / "ev", options=OPTIONS
    )
    sup.start()
    try:
        arrived = events.wait_for(lambda e: isinstance(e, VehicleArrived), 60, "VehicleArrived")
        assert (arrived.plate, arrived.bay_id, arrived.camera) == (CLIP_PLATE, "B1", "bay-cam")
        assert arrived.confidence > 0.8 and len(arrived.char_confidences) == len(CLIP_PLATE)
        assert (tmp_path / "ev" / arrived.evidence.frame_path).is_file()
        assert (tmp_path / "ev" / arrived.evidence.crop_path).is_file()
        departed = events.wait_for(lambda e: isinstance(e, VehicleDeparted), 40, "VehicleDeparted")
        assert departed.presence_id == arrived.presence_id and departed.plate == CLIP_PLATE
        assert departed.first_seen <= arrived.at <= departed.last_seen < departed.at
        # between them: heartbeats of the same presence only; one arrival, one departure
        between = events.all[events.all.index(arrived) + 1 : events.all.index(departed)]
        assert not [e for e in between if isinstance(e, VehicleArrived | VehicleDeparted)]
        assert all(
            e.presence_id == arrived.presence_id for e in between if isinstance(e, VehicleStillPresent)
        )
        (st,) = sup.status()
        assert st.state == "running" and st.fps_in > 5 and st.last_read is not None and st.restarts == 0
        assert any(isinstance(e, CameraStateChanged) and e.state == "running" for e in events.all)
    finally:
        sup.stop()
    texts = [getattr(e, "detail", "") for e in events.all] + [caplog.text, str(sup.status())]
    assert not [t for t in texts if SECRET in t]
    assert SECRET not in "".join(capfd.readouterr())  # nor in what FFmpeg/OpenCV print in the child


def running_past(grabber: FrameGrabber, frames: int) -> bool:
    st = grabber.stats()
    return st.state == "running" and st.frames_in > frames


def test_capture_survives_frozen_and_killed_server(server: RtspServer) -> None:
    grabber = FrameGrabber(server.url, CAPTURE, name="t")
    grabber.start()
    try:
        wait_until(lambda: grabber.stats().frames_in > 10, 20, what="first frames")
        # Frozen camera (process stopped): silent for read_timeout -> reopen.
        server.signal(signal.SIGSTOP)
        wait_until(lambda: grabber.stats().state == "reconnecting", 10, what="reconnecting after freeze")
        server.signal(signal.SIGCONT)
        n = grabber.stats().frames_in
        wait_until(lambda: running_past(grabber, n + 10), 30, what="frames after thaw")
        # Killed camera, back a few seconds later on the same port.
        server.kill()
        wait_until(lambda: grabber.stats().state == "reconnecting", 10, what="reconnecting after kill")
        time.sleep(1.5)
        server.start()
        n = grabber.stats().frames_in
        wait_until(lambda: running_past(grabber, n + 10), 30, what="frames after restart")
        assert grabber.stats().reconnects >= 2
        assert SECRET not in grabber.stats().detail
    finally:
        grabber.stop()


def test_supervisor_restarts_a_killed_worker(server: RtspServer, tmp_path: Path) -> None:
    events = Events()
    sup = CameraSupervisor([camera(server.url)], make_null_recognizer, events, tmp_path, options=OPTIONS)
    sup.start()
    try:
        events.wait_for(lambda e: isinstance(e, CameraStateChanged) and e.state == "running", 30, "running")
        first = sup.pid("bay-cam")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        events.wait_for(
            lambda e: isinstance(e, CameraStateChanged) and e.state == "running", 30, "running again"
        )
        (st,) = sup.status()
        assert st.restarts == 1 and sup.pid("bay-cam") not in (None, first)
        wait_until(lambda: sup.status()[0].fps_in > 0, 10, what="frames after restart")
    finally:
        sup.stop()
    assert sup.status()[0].state == "stopped"


def test_failed_after_restart_limit_and_other_cameras_unaffected(tmp_path: Path) -> None:
    events = Events()
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{closed_port()}/cam"
    cams = [camera(url, name="broken"), camera(url, name="fine")]
    sup = CameraSupervisor(cams, BrokenFor("broken"), events, tmp_path, options=OPTIONS)
    sup.start()
    try:
        failed = events.wait_for(
            lambda e: isinstance(e, CameraStateChanged) and e.state == "failed", 60, "failed"
        )
        assert (
            failed.camera == "broken"
            and "died 6 times" in failed.detail
            and "not restarting" in failed.detail
        )
        time.sleep(1.0)  # no restart after failed
        broken, fine = sup.status()
        assert (broken.state, broken.restarts) == ("failed", 5) and sup.pid("broken") is None
        assert fine.state == "reconnecting" and fine.restarts == 0  # its own (bad URL) trouble only
        sup.start_camera("broken")  # the operator's retry clears the failure
        assert sup.status()[0].state == "starting"
    finally:
        sup.stop()
    assert not [e for e in events.all if SECRET in getattr(e, "detail", "")]


def test_bad_url_is_a_clear_state_not_a_crash(tmp_path: Path, caplog, capfd) -> None:
    events = Events()
    bad = camera(f"rtsp://admin:{SECRET}@127.0.0.1:{closed_port()}/cam", name="bad")
    off = camera("rtsp://127.0.0.1:1/cam", name="off", enabled=False)
    sup = CameraSupervisor([bad, off], make_null_recognizer, events, tmp_path, options=OPTIONS)
    sup.start()
    try:
        wait_until(lambda: sup.status()[0].state == "reconnecting", 30, what="reconnecting")
        st, off_st = sup.status()
        assert "cannot open rtsp://***@127.0.0.1" in st.detail and st.restarts == 0
        assert (off_st.state, off_st.detail) == ("stopped", "disabled in config")
        sup.stop_camera("bad")
        assert sup.status()[0].state == "stopped"
    finally:
        sup.stop()
    assert SECRET not in caplog.text and SECRET not in str(sup.status())
    assert not [e for e in events.all if SECRET in getattr(e, "detail", "")]
    assert SECRET not in "".join(capfd.readouterr())


def test_silent_worker_is_killed_and_restarted(tmp_path: Path, caplog) -> None:
    url = f"rtsp://127.0.0.1:{closed_port()}/cam"
    sup = CameraSupervisor(
        [camera(url)], make_hanging_recognizer, Events(), tmp_path, stall_timeout_s=1.5, stop_timeout_s=1
    )
    sup.start()
    try:
        first = wait_until(lambda: sup.pid("bay-cam"), 10, what="a worker")
        wait_until(lambda: sup.status()[0].restarts >= 1, 15, what="a restart of the silent worker")
        assert sup.pid("bay-cam") != first and "silent for" in caplog.text
    finally:
        sup.stop()
