"""The per-camera process: capture -> motion gate -> recogniser -> bay zones -> grouping -> events.

`run_worker` is the process entry point the supervisor starts (spawn/forkserver). Everything the
child needs arrives as picklable arguments; the recogniser is *built inside the child* from a
factory, so ONNX sessions and threads never cross a process boundary. The child talks to the parent
through one pipe of its own (`Channel`): domain events, status snapshots and log records. One pipe
per child, not one shared queue, because a child killed with SIGKILL in the middle of a write can
leave a shared queue's lock held forever and silence every other camera; a torn pipe only loses
its own camera, and the supervisor replaces it.

Bay zones are polygons in the pixels of the stream that is processed: the sub-stream when
`sub_url` is set (a sub-stream is cheaper to decode; choose one in which plates stay readable).
A camera without zones watches one bay, named after the camera, covering the whole frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import logging.handlers
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from anpr.capture import CaptureOptions, CaptureState, Frame, FrameGrabber
from anpr.evidence import save_evidence
from anpr.grouping import GroupingOptions, PresenceGrouper, Read
from anpr.motion import MotionGate, MotionOptions
from anpr.types import PlateCandidate, Recognizer
from models.base import Clock, utcnow
from models.events import CameraStateChanged, Evidence, PlateRead, VehicleArrived, VehicleDeparted
from models.logsetup import RedactingFilter
from models.settings import CameraSettings

log = logging.getLogger(__name__)

RecognizerFactory = Callable[[], Recognizer]
MessageKind = Literal["event", "status", "log", "snapshot"]


@dataclass(frozen=True)
class WorkerOptions:
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    motion: MotionOptions = field(default_factory=MotionOptions)
    grouping: GroupingOptions = field(default_factory=GroupingOptions)
    status_interval_s: float = 1.0
    emit_reads: bool = True  # a PlateRead per plate box inside a bay (only on frames the gate let through)
    roi_margin_px: int = 24  # the recogniser gets the active bays' bounding box plus this margin
    jpeg_quality: int = 90
    log_level: int = logging.INFO


@dataclass(frozen=True)
class WorkerStatus:
    camera: str
    state: CaptureState
    detail: str
    fps_in: float
    fps_processed: float
    frames_in: int
    frames_dropped: int
    frames_processed: int  # frames the worker took (at most `fps` a second)
    frames_recognised: int  # of those, frames the motion gate sent to the recogniser
    recognise_errors: int
    last_read: datetime | None  # when the last frame arrived from the camera
    at: datetime


class Sink(Protocol):
    def put(self, msg: tuple[MessageKind, Any]) -> None: ...


class Channel:
    """Queue-like writer over the child's end of a pipe; thread-safe (capture thread + main loop).

    It has `put_nowait` so a `logging.handlers.QueueHandler` can write to it directly.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.broken = False

    def put(self, msg: tuple[MessageKind, Any]) -> None:
        if self.broken:
            return
        try:
            with self._lock:
                self._conn.send(msg)
        except (OSError, EOFError, ValueError):  # parent gone: nothing left to report to
            self.broken = True

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.put(("log", record))


class _BestFrames:
    """Per bay, the frame behind the most confident read of each text, for the arrival's evidence.

    Reads must not hold frames (a pending track may gather hundreds of reads); this keeps at most
    `per_bay` frames a bay, and is cleared once the arrival has its evidence.
    """

    def __init__(self, per_bay: int = 6) -> None:
        self.per_bay = per_bay
        self._by_bay: dict[str, dict[str | None, tuple[float, np.ndarray, Read]]] = {}

    def offer(self, bay_id: str, read: Read, image: np.ndarray) -> None:
        slot = self._by_bay.setdefault(bay_id, {})
        score = read.confidence if read.text else read.det_confidence
        if read.text in slot and slot[read.text][0] >= score:
            return
        slot[read.text] = (score, image, read)
        if len(slot) > self.per_bay:
            del slot[min(slot, key=lambda k: slot[k][0])]

    def get(self, bay_id: str, text: str | None) -> tuple[np.ndarray, Read] | None:
        hit = self._by_bay.get(bay_id, {}).get(text)
        return (hit[1], hit[2]) if hit else None

    def clear(self, bay_id: str) -> None:
        self._by_bay.pop(bay_id, None)


def _centre_in(poly: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return cv2.pointPolygonTest(poly, (float(cx), float(cy)), False) >= 0


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._t: list[float] = []

    def hit(self, now: float) -> None:
        self._t.append(now)
        if len(self._t) > 256:
            del self._t[:128]

    def per_s(self, now: float) -> float:
        recent = [t for t in self._t if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        return round((len(recent) - 1) / max(recent[-1] - recent[0], 1e-6), 2)


class CameraWorker:
    """The loop of one camera. Runs in the child process; usable in-process for tests and demos."""

    def __init__(
        self,
        camera: CameraSettings,
        recognizer: Recognizer,
        sink: Sink,
        evidence_dir: Path | None,
        options: WorkerOptions | None = None,
        *,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.recognizer = recognizer
        self.sink = sink
        self.evidence_dir = Path(evidence_dir) if evidence_dir is not None else None
        self.opts = options or WorkerOptions()
        self._clock = clock
        self._mono = monotonic
        self._zones: list[tuple[str, np.ndarray]] = [
            (z.bay_id, np.asarray(z.polygon, np.float32)) for z in camera.zones
        ]
        self._gate: MotionGate | None = None
        self._best = _BestFrames()
        self.grouper = PresenceGrouper(camera.name, self.opts.grouping, clock=clock, evidence=self._save)
        url = camera.sub_url or camera.url
        self.grabber = FrameGrabber(
            url, self.opts.capture, name=camera.name, monotonic=monotonic, on_state=self._on_capture_state
        )
        self._processed = _Rate()
        self._n_processed = 0
        self._n_recognised = 0
        self._n_errors = 0
        self._last_error = ""

    # --- wiring -----------------------------------------------------------------------------

    def _emit(self, event: Any) -> None:
        self.sink.put(("event", event))

    def _on_capture_state(self, state: CaptureState, detail: str) -> None:
        self._emit(CameraStateChanged(at=self._clock(), camera=self.camera.name, state=state, detail=detail))

    def _save(self, presence_id: str, read: Read, at: datetime) -> Evidence:
        bay_id = read.ref
        hit = self._best.get(bay_id, read.text)
        self._best.clear(bay_id)
        if self.evidence_dir is None or hit is None:
            return Evidence()
        image, best = hit  # the frame of the most confident read of the chosen text, and its box
        return save_evidence(
            self.evidence_dir, self.camera.name, presence_id, image, best.box, at, self.opts.jpeg_quality
        )

    def status(self) -> WorkerStatus:
        s = self.grabber.stats()
        detail = s.detail
        if self._last_error:
            detail = f"{detail}; recogniser: {self._last_error}"
        return WorkerStatus(
            camera=self.camera.name,
            state=s.state,
            detail=detail,
            fps_in=s.fps_in,
            fps_processed=self._processed.per_s(self._mono()),
            frames_in=s.frames_in,
            frames_dropped=s.frames_dropped,
            frames_processed=self._n_processed,
            frames_recognised=self._n_recognised,
            recognise_errors=self._n_errors,
            last_read=s.last_frame_at,
            at=self._clock(),
        )

    # --- the loop ---------------------------------------------------------------------------

    def snapshot(self) -> tuple[bytes, datetime] | None:
        """The newest frame from the camera as a JPEG, and when it arrived; None before the first."""
        frame = self.grabber.peek()
        if frame is None:
            return None
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return (buf.tobytes(), frame.wall) if ok else None

    def run(self, stop: Any, snapshot_request: Any = None) -> None:
        """Loop until `stop` (a threading or multiprocessing Event) is set. When `snapshot_request` (an
        Event) is set, the newest frame goes to the sink as ("snapshot", (jpeg, arrived) or None)."""
        period = 1.0 / self.camera.fps
        next_frame = self._mono()
        next_status = self._mono()
        self.grabber.start()
        try:
            while not stop.is_set() and not getattr(self.sink, "broken", False):  # broken: parent gone
                if snapshot_request is not None and snapshot_request.is_set():
                    snapshot_request.clear()
                    self.sink.put(("snapshot", self.snapshot()))
                now = self._mono()
                if now >= next_status:
                    self.sink.put(("status", self.status()))
                    next_status = now + self.opts.status_interval_s
                if now < next_frame:  # hold the processing rate at `fps`: the grabber drops the rest
                    stop.wait(min(next_frame, next_status) - now)
                    continue
                frame = self.grabber.wait_newer(timeout=max(0.05, next_status - now))
                if frame is not None:
                    # Keep the cadence when on time; when behind, take the next frame at once (no burst).
                    next_frame = max(next_frame + period, self._mono())
                    self.process(frame)
                for event in self.grouper.tick():
                    self._emit(event)
        finally:
            self.grabber.stop(timeout=2.0)  # a read blocked in FFmpeg cannot be cut; the thread is a daemon
            self.sink.put(("status", self.status()))

    def process(self, frame: Frame) -> None:
        """One frame: gate, recognise the bays that are due, feed grouping, emit what it decides."""
        image = frame.image
        self._n_processed += 1
        self._processed.hit(frame.monotonic)
        if not self._zones:  # no zones configured: the whole frame is one bay named after the camera
            h, w = image.shape[:2]
            self._zones = [(self.camera.name, np.asarray([(0, 0), (w, 0), (w, h), (0, h)], np.float32))]
        if self._gate is None:
            self._gate = MotionGate(
                [(b, [tuple(p) for p in poly]) for b, poly in self._zones], self.opts.motion
            )
        due = self._gate.due(image, frame.monotonic)
        if not due:
            return
        zones = [(b, poly) for b, poly in self._zones if b in due]
        candidates = self._recognise(image, [poly for _, poly in zones])
        if candidates is None:  # recogniser failed: the bays were not really looked at
            return
        now = self._clock()
        for bay_id, poly in zones:
            mine = [c for c in candidates if _centre_in(poly, c.box)]
            reads = [
                Read(c.text, c.confidence, c.char_confidences, c.det_confidence, c.box, ref=bay_id)
                for c in mine
            ]
            if self.grouper.track(bay_id) is None:
                self._best.clear(bay_id)  # leftovers of a passer-by that never arrived
            track = self.grouper.track(bay_id)
            if track is None or not track.arrived:
                for r in reads:
                    self._best.offer(bay_id, r, image)
            if self.opts.emit_reads:
                for c in mine:
                    self._emit(
                        PlateRead(
                            at=now,
                            camera=self.camera.name,
                            bay_id=bay_id,
                            plate=c.text,
                            raw_text=c.raw_text,
                            confidence=min(1.0, max(0.0, c.confidence)),
                            char_confidences=tuple(min(1.0, max(0.0, x)) for x in c.char_confidences),
                            box=c.box,
                        )
                    )
            for event in self.grouper.observe(bay_id, reads):
                if isinstance(event, VehicleDeparted | VehicleArrived):
                    self._best.clear(bay_id)
                self._emit(event)

    def _recognise(self, image: np.ndarray, polys: Sequence[np.ndarray]) -> list[PlateCandidate] | None:
        """Run the recogniser on the bounding box of the due bays only; boxes back in frame pixels."""
        h, w = image.shape[:2]
        pts = np.concatenate(polys)
        m = self.opts.roi_margin_px
        x0, y0 = max(0, int(pts[:, 0].min()) - m), max(0, int(pts[:, 1].min()) - m)
        x1, y1 = min(w, int(np.ceil(pts[:, 0].max())) + m), min(h, int(np.ceil(pts[:, 1].max())) + m)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        roi = image[y0:y1, x0:x1]
        self._n_recognised += 1
        try:
            found = self.recognizer.recognize(np.ascontiguousarray(roi))
        except Exception as exc:  # one bad frame must not end the camera
            self._n_errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"[:200]
            if self._n_errors <= 3 or self._n_errors % 100 == 0:
                log.exception("camera %s: recogniser failed (%d so far)", self.camera.name, self._n_errors)
            return None
        self._last_error = ""
        return [replace(c, box=(c.box[0] + x0, c.box[1] + y0, c.box[2] + x0, c.box[3] + y0)) for c in found]


# --- process entry point ---------------------------------------------------------------------


def _name_process(camera: str) -> None:
    """Make the child recognisable in ps/top: multiprocessing name and the kernel's 15-byte comm."""
    mp.current_process().name = f"camera:{camera}"
    try:
        import setproctitle  # type: ignore[import-not-found]

        setproctitle.setproctitle(f"baywarden camera {camera}")
        return
    except ImportError:
        pass
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, f"bw-cam-{camera}".encode()[:15], 0, 0, 0)  # 15 = PR_SET_NAME
    except (OSError, AttributeError):
        pass


def run_worker(
    camera: CameraSettings,
    recognizer_factory: RecognizerFactory,
    conn: Any,
    stop: Any,
    evidence_dir: Path | None,
    options: WorkerOptions | None = None,
    snapshot_request: Any = None,
) -> None:
    """Process target. Exits 0 when `stop` is set, non-zero when it cannot run (the supervisor restarts)."""
    opts = options or WorkerOptions()
    _name_process(camera.name)
    faulthandler.enable()  # a segfault in native code (FFmpeg, ONNX) leaves a Python trace on stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle, in order
    channel = Channel(conn)
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.handlers.QueueHandler(channel)  # type: ignore[arg-type]
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(opts.log_level)
    cv2.setNumThreads(1)  # many cameras share few cores: parallelism comes from processes
    # OpenCV's own warnings repeat what the capture state already says, on every retry.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        recognizer = recognizer_factory()
        worker = CameraWorker(camera, recognizer, channel, evidence_dir, opts)
        worker.run(stop, snapshot_request)
    except Exception:
        log.exception("camera %s: worker crashed", camera.name)
        raise SystemExit(1) from None
    finally:
        with contextlib.suppress(OSError):
            conn.close()
