"""Camera capture: one reader thread per stream that keeps only the newest frame.

Why a thread that overwrites one slot: OpenCV's `read()` must be called at the source rate or the
FFmpeg buffer (and so the latency) grows; the consumer (motion gate + recogniser) is slower and
irregular. The reader never waits for the consumer: a frame nobody took before the next one arrived
is counted in `frames_dropped`, so a slow recogniser shows up as drops, never as a backlog.

Failures are states, not exceptions: a camera that never answers, a stream of garbage, a server
that dies or freezes, all leave the thread running in `reconnecting` with a readable `detail`, and
it reopens with capped exponential backoff. Every URL that reaches a log line or a state string
goes through `redact_url` first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from models.logsetup import redact, redact_url

log = logging.getLogger(__name__)

CaptureState = Literal["starting", "running", "reconnecting", "stopped"]


@dataclass(frozen=True)
class CaptureOptions:
    """Timeouts and backoff of one stream reader (picklable: it travels to the worker process)."""

    open_timeout_s: float = 5.0
    # A silent stream: `read()` gives up after this long and the stream is reopened (30 s if unset).
    read_timeout_s: float = 5.0
    stale_after_s: float = 10.0  # frames arrive but none decodes to an image for this long -> reopen
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    transport: Literal["tcp", "udp"] = "tcp"  # tcp: no smeared frames from lost UDP packets


@dataclass(frozen=True)
class Frame:
    seq: int  # 1, 2, 3, ... in arrival order; gaps are frames dropped before anyone took them
    image: np.ndarray
    monotonic: float
    wall: datetime


@dataclass(frozen=True)
class CaptureStats:
    state: CaptureState
    detail: str
    frames_in: int
    frames_dropped: int
    frames_corrupt: int
    reconnects: int
    fps_in: float
    last_frame_at: datetime | None


def _open_cv(url: str, opts: CaptureOptions) -> Any:
    """Open with the FFmpeg backend; returns a cv2.VideoCapture (maybe not opened)."""
    import cv2

    # Read by OpenCV's FFmpeg backend at every open, so setting it here is enough.
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{opts.transport}"
    source = url[len("file://") :] if url.startswith("file://") else url
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(opts.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(opts.read_timeout_s * 1000),
    ]
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


def _valid(image: Any) -> bool:
    return isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[0] >= 8 and image.shape[1] >= 8


class FrameGrabber:
    """Reads one stream on a daemon thread; `latest()`/`wait_newer()` hand out the newest frame.

    `opener` is injectable so tests can feed a fake capture; in production it is OpenCV/FFmpeg.
    """

    def __init__(
        self,
        url: str,
        options: CaptureOptions | None = None,
        *,
        name: str = "camera",
        opener: Callable[[str, CaptureOptions], Any] = _open_cv,
        monotonic: Callable[[], float] = time.monotonic,
        on_state: Callable[[CaptureState, str], None] | None = None,
    ) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.opts = options or CaptureOptions()
        self.name = name
        self._opener = opener
        self._mono = monotonic
        self._on_state = on_state
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: Frame | None = None
        self._taken_seq = 0
        self._state: CaptureState = "stopped"
        self._detail = "not started"
        self._frames_in = 0
        self._dropped = 0
        self._corrupt = 0
        self._reconnects = 0
        self._last_reason = ""
        self._rate: list[float] = []  # arrival times over the last few seconds, for fps_in

    # --- consumer side ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._set_state("starting", f"opening {self.safe_url}")
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop; it notices within one read timeout (a blocked read cannot be cut)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(self.opts.read_timeout_s + 1 if timeout is None else timeout)
        self._set_state("stopped", "stopped")

    def latest(self) -> Frame | None:
        """The newest frame not handed out yet, or None."""
        with self._cond:
            return self._take()

    def wait_newer(self, timeout: float) -> Frame | None:
        """Block up to `timeout` for a frame newer than the last one handed out."""
        deadline = self._mono() + timeout
        with self._cond:
            while not self._stop.is_set():
                frame = self._take()
                if frame is not None:
                    return frame
                left = deadline - self._mono()
                if left <= 0:
                    return None
                self._cond.wait(left)
        return None

    def peek(self) -> Frame | None:
        """The newest frame, whether handed out or not, without taking it (for snapshots)."""
        with self._cond:
            return self._frame

    def _take(self) -> Frame | None:
        frame = self._frame
        if frame is None or frame.seq <= self._taken_seq:
            return None
        self._taken_seq = frame.seq
        return frame

    def stats(self) -> CaptureStats:
        now = self._mono()
        with self._cond:
            recent = [t for t in self._rate if now - t <= 5.0]
            span = (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
            fps = (len(recent) - 1) / span if span > 0 else 0.0
            return CaptureStats(
                state=self._state,
                detail=self._detail,
                frames_in=self._frames_in,
                frames_dropped=self._dropped,
                frames_corrupt=self._corrupt,
                reconnects=self._reconnects,
                fps_in=round(fps, 2),
                last_frame_at=self._frame.wall if self._frame is not None else None,
            )

    # --- reader thread ------------------------------------------------------------------------

    def _set_state(self, state: CaptureState, detail: str) -> None:
        detail = redact(detail)
        with self._cond:
            changed = state != self._state
            self._state, self._detail = state, detail
        if changed:
            log.info("camera %s: %s (%s)", self.name, state, detail)
            if self._on_state is not None:
                try:
                    self._on_state(state, detail)
                except Exception:  # a broken callback must not kill the reader
                    log.exception("camera %s: state callback failed", self.name)

    def _run(self) -> None:
        backoff = self.opts.backoff_initial_s
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            reason = self._session()
            if self._stop.is_set():
                break
            if reason == "read":  # it worked for a while: start the backoff over
                backoff, attempt = self.opts.backoff_initial_s, 1
            self._reconnects += 1
            self._set_state("reconnecting", f"{self._last_reason}; retry {attempt} in {backoff:.1f} s")
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.opts.backoff_max_s)

    def _session(self) -> str:
        """One open-read-close cycle. Returns 'open' if it never got a frame, 'read' otherwise."""
        cap = None
        got_frame = False
        try:
            t0 = self._mono()
            cap = self._opener(self.url, self.opts)
            if cap is None or not cap.isOpened():
                took = self._mono() - t0
                why = "timed out" if took >= self.opts.open_timeout_s * 0.9 else "refused or not a stream"
                self._last_reason = f"cannot open {self.safe_url} ({why} after {took:.1f} s)"
                return "open"
            last_good = self._mono()
            while not self._stop.is_set():
                ok, image = cap.read()
                now = self._mono()
                if ok and _valid(image):
                    last_good = now
                    if not got_frame:
                        got_frame = True
                        self._set_state("running", f"reading {self.safe_url}")
                    self._publish(image, now)
                    continue
                if ok:  # decoder handed back something that is not an image
                    with self._cond:
                        self._corrupt += 1
                elif not got_frame:
                    self._last_reason = f"opened {self.safe_url} but no decodable frame arrived"
                    return "open"
                else:
                    self._last_reason = f"stream {self.safe_url} ended or stalled"
                    return "read"
                if now - last_good > self.opts.stale_after_s:
                    self._last_reason = f"no valid frame from {self.safe_url} for {now - last_good:.0f} s"
                    return "read" if got_frame else "open"
        except Exception as exc:  # OpenCV raises cv2.error on some garbage; never leave the thread
            self._last_reason = f"capture error on {self.safe_url}: {redact(str(exc))[:200]}"
            log.debug("camera %s: capture error", self.name, exc_info=True)
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception:
                    log.debug("camera %s: release failed", self.name, exc_info=True)
        return "read" if got_frame else "open"

    def _publish(self, image: np.ndarray, now: float) -> None:
        with self._cond:
            prev = self._frame
            if prev is not None and prev.seq > self._taken_seq:
                self._dropped += 1  # nobody took the previous one: skip it, never queue
            self._frames_in += 1
            self._frame = Frame(self._frames_in, image, now, datetime.now(UTC))
            self._rate.append(now)
            if len(self._rate) > 64:
                del self._rate[:32]
            self._cond.notify_all()
