"""Starts one worker process per enabled camera, pumps their events out, restarts them when they die.

Shape (after Frigate's app/watchdog): `start()` is a flat list of steps and `stop()` undoes them in
reverse. Two threads in the parent:

* the *pump* waits on every worker's pipe at once and hands each domain event to `event_sink`,
  keeps the last status snapshot, and replays child log records into the parent's logging;
* the *watchdog* restarts a dead (or silent: no status for `stall_timeout_s`) worker, at most
  `max_restarts` times in `restart_window_s`; past that the camera is `failed` and a
  `CameraStateChanged(state="failed")` goes out: that is the operator's alert.

Nothing about one camera (a bad URL, a crashing recogniser, a killed process) can raise out of
the supervisor or stop the other cameras. `event_sink` is called from one thread at a time.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

from anpr.worker import RecognizerFactory, WorkerOptions, WorkerStatus, run_worker
from models.base import Clock, utcnow
from models.events import CameraStateChanged
from models.logsetup import redact
from models.settings import CameraSettings

log = logging.getLogger(__name__)

SupervisorState = Literal["starting", "running", "reconnecting", "stopped", "failed"]


@dataclass(frozen=True)
class CameraStatus:
    name: str
    state: SupervisorState
    fps_in: float
    fps_processed: float
    frames_dropped: int
    last_read: datetime | None  # when the worker last got a frame from the camera
    restarts: int
    detail: str


@dataclass
class _Slot:
    camera: CameraSettings
    wanted: bool = False
    state: SupervisorState = "stopped"
    detail: str = ""
    process: Any = None  # multiprocessing BaseProcess
    reader: Connection | None = None
    stop: Any = None  # multiprocessing Event
    started_at: float = 0.0
    last_heard: float = 0.0
    restart_times: deque[float] = field(default_factory=deque)
    restarts: int = 0
    status: WorkerStatus | None = None
    snap_request: Any = None  # multiprocessing Event: "send me your newest frame"
    snapshot: tuple[bytes, datetime] | None = None  # the last answer: JPEG and when the frame arrived
    snapshot_seq: int = 0


class CameraSupervisor:
    def __init__(
        self,
        cameras: Iterable[CameraSettings],
        recognizer_factory: RecognizerFactory,
        event_sink: Callable[[Any], None],
        evidence_dir: Path | None,
        clock: Clock = utcnow,
        *,
        options: WorkerOptions | None = None,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
        stall_timeout_s: float = 60.0,
        stop_timeout_s: float = 8.0,
        start_method: Literal["forkserver", "spawn"] = "forkserver",
        poll_s: float = 0.25,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = {c.name: _Slot(c) for c in cameras}
        self._factory = recognizer_factory
        self._sink = event_sink
        self._evidence_dir = Path(evidence_dir) if evidence_dir is not None else None
        self._clock = clock
        self._opts = options or WorkerOptions()
        self._max_restarts = max_restarts
        self._window = restart_window_s
        self._stall = stall_timeout_s
        self._stop_timeout = stop_timeout_s
        self._poll = poll_s
        self._mono = monotonic
        self._method = start_method
        self._ctx: Any = None
        self._lock = threading.RLock()
        self._snapshots = threading.Condition(self._lock)
        self._sink_lock = threading.Lock()
        self._halt = threading.Event()
        # Pipes of replaced workers, read until EOF so their last events are not lost.
        self._orphans: dict[Connection, _Slot] = {}
        self._sink_since: float | None = None  # set while event_sink runs: a slow sink is not a stall
        self._pump: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        for slot in self._slots.values():
            slot.detail = "not started" if slot.camera.enabled else "disabled in config"

    # --- lifecycle: start() in order, stop() in reverse ---------------------------------------

    def start(self, cameras: bool = True) -> None:
        """Start the pump and the watchdog, and every enabled camera unless `cameras` is False (a fleet
        starts each camera only where its lease is held)."""
        self._init_context()
        self._halt.clear()
        self._start_pump()
        for name, slot in self._slots.items():
            if slot.camera.enabled and cameras:
                self.start_camera(name)
        self._start_watchdog()

    def is_wanted(self, name: str) -> bool:
        """Started and not stopped by request (the watchdog restarts it if its worker dies)."""
        with self._lock:
            slot = self._slots.get(name)
            return slot is not None and slot.wanted

    def stop(self) -> None:
        self._halt.set()
        self._join(self._watchdog)
        names = [n for n, s in self._slots.items() if s.process is not None]
        with self._lock:  # ask every worker at once, so the slow ones overlap
            for name in names:
                self._slots[name].wanted = False
                if self._slots[name].stop is not None:
                    self._slots[name].stop.set()
        for name in reversed(names):
            self.stop_camera(name)
        self._join(self._pump)

    def _init_context(self) -> None:
        # Never plain fork: the parent has threads (pump, watchdog, the web server's) whose locks
        # a forked child would inherit mid-use. forkserver forks from a clean single-threaded
        # server with the worker module preloaded, so a restart costs milliseconds, not an import.
        self._ctx = mp.get_context(self._method)
        if self._method == "forkserver":
            self._ctx.set_forkserver_preload(["anpr.worker"])

    def _start_pump(self) -> None:
        self._pump = threading.Thread(target=self._pump_loop, name="camera-pump", daemon=True)
        self._pump.start()

    def _start_watchdog(self) -> None:
        self._watchdog = threading.Thread(target=self._watchdog_loop, name="camera-watchdog", daemon=True)
        self._watchdog.start()

    @staticmethod
    def _join(thread: threading.Thread | None) -> None:
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    # --- per camera -----------------------------------------------------------------------------

    def start_camera(self, name: str) -> None:
        """Start (or restart by hand: this also clears a `failed` state) one camera's worker."""
        with self._lock:
            slot = self._slots[name]
            slot.wanted = True
            slot.restart_times.clear()
            if slot.process is not None and slot.process.is_alive():
                return
            self._spawn(slot)

    def stop_camera(self, name: str) -> None:
        with self._lock:
            slot = self._slots[name]
            slot.wanted = False
            proc, stop = slot.process, slot.stop
        if stop is not None:
            stop.set()
        if proc is not None:
            proc.join(self._stop_timeout)
            if proc.is_alive():
                log.warning("camera %s: worker did not stop in %.0f s, terminating", name, self._stop_timeout)
                proc.terminate()
                proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        with self._lock:
            was = slot.state
            slot.process, slot.stop = None, None
            slot.state, slot.detail = "stopped", "stopped by request"
        if was != "stopped":
            self._emit(
                CameraStateChanged(
                    at=self._clock(), camera=name, state="stopped", detail="stopped by request"
                )
            )

    def status(self) -> list[CameraStatus]:
        with self._lock:
            out = []
            for name, slot in self._slots.items():
                st = slot.status
                out.append(
                    CameraStatus(
                        name=name,
                        state=slot.state,
                        fps_in=st.fps_in if st else 0.0,
                        fps_processed=st.fps_processed if st else 0.0,
                        frames_dropped=st.frames_dropped if st else 0,
                        last_read=st.last_read if st else None,
                        restarts=slot.restarts,
                        detail=slot.detail,
                    )
                )
            return out

    def snapshot(self, name: str, timeout: float = 2.0) -> tuple[bytes, datetime] | None:
        """The running worker's newest frame (JPEG, arrival time), asked for over its pipe; None when the
        worker is not running, has no frame yet, or does not answer within `timeout`."""
        deadline = self._mono() + timeout
        with self._lock:
            slot = self._slots.get(name)
            if slot is None or slot.snap_request is None or slot.state != "running":
                return None
            if slot.process is None or not slot.process.is_alive():
                return None
            seq = slot.snapshot_seq
            slot.snap_request.set()
            while slot.snapshot_seq == seq:
                left = deadline - self._mono()
                if left <= 0:
                    return None
                self._snapshots.wait(left)
            return slot.snapshot

    def pid(self, name: str) -> int | None:
        """The worker's process id (for operators and tests)."""
        with self._lock:
            proc = self._slots[name].process
            return proc.pid if proc is not None else None

    def _factory_for(self, camera: CameraSettings) -> RecognizerFactory:
        """The camera's own recogniser recipe (its region overrides the site's), when the factory has one."""
        per_camera = getattr(self._factory, "for_camera", None)
        return per_camera(camera) if callable(per_camera) else self._factory

    def _spawn(self, slot: _Slot) -> None:
        """Start a worker for the slot; a failure to start counts like a crash (never raises)."""
        if self._ctx is None:
            self._init_context()
        name = slot.camera.name
        reader, writer = self._ctx.Pipe(duplex=False)
        stop = self._ctx.Event()
        snap_request = self._ctx.Event()
        proc = self._ctx.Process(
            target=run_worker,
            name=f"camera:{name}",
            args=(slot.camera, self._factory_for(slot.camera), writer, stop, self._evidence_dir, self._opts,
                  snap_request),
            # daemon: a normal parent exit ends them too; after a hard parent death a worker
            # notices its broken pipe within a status interval and exits on its own.
            daemon=True,
        )
        try:
            proc.start()
        except Exception as exc:  # e.g. an unpicklable factory, out of processes
            reader.close()
            writer.close()
            if slot.reader is not None:
                self._orphans[slot.reader] = slot
            slot.process, slot.stop, slot.reader = None, None, None
            slot.state, slot.detail = "starting", f"cannot start worker: {redact(str(exc))[:200]}"
            log.error("camera %s: %s", name, slot.detail)
            slot.started_at = slot.last_heard = self._mono()
            return
        writer.close()  # the child holds its own copy; ours would hide the child's death (no EOF)
        if slot.reader is not None:
            self._orphans[slot.reader] = slot
        slot.process, slot.stop, slot.reader, slot.snap_request = proc, stop, reader, snap_request
        slot.state, slot.detail = "starting", f"worker pid {proc.pid} started"
        slot.started_at = slot.last_heard = self._mono()
        slot.status = None

    # --- watchdog -------------------------------------------------------------------------------

    def _watchdog_loop(self) -> None:
        while not self._halt.wait(self._poll):
            try:
                self._check_workers()
            except Exception:  # the watchdog must outlive any surprise
                log.exception("camera watchdog: unexpected error")

    def _check_workers(self) -> None:
        now = self._mono()
        failed: list[CameraStateChanged] = []
        # While the pump sits in a slow event_sink, children block on full pipes and go quiet;
        # that is the parent's fault, so the silence clock restarts instead of killing them.
        sink_busy = self._sink_since is not None and now - self._sink_since > self._poll * 4
        with self._lock:
            for name, slot in self._slots.items():
                if not slot.wanted or slot.state == "failed" or self._halt.is_set():
                    continue
                proc = slot.process
                if proc is not None and proc.is_alive():
                    if sink_busy:
                        slot.last_heard = now
                    elif now - slot.last_heard > self._stall:
                        log.error(
                            "camera %s: worker silent for %.0f s, killing it", name, now - slot.last_heard
                        )
                        proc.kill()
                    continue
                code = proc.exitcode if proc is not None else None
                if proc is not None:
                    proc.join(0)
                while slot.restart_times and now - slot.restart_times[0] > self._window:
                    slot.restart_times.popleft()
                if len(slot.restart_times) >= self._max_restarts:
                    slot.wanted = False
                    slot.process, slot.stop = None, None
                    slot.state = "failed"
                    slot.detail = (
                        f"worker died {len(slot.restart_times) + 1} times in {self._window:.0f} s "
                        f"(last exit code {code}); not restarting. {slot.detail}"
                    )[:500]
                    log.error("camera %s: %s", name, slot.detail)
                    failed.append(
                        CameraStateChanged(at=self._clock(), camera=name, state="failed", detail=slot.detail)
                    )
                    continue
                slot.restart_times.append(now)
                slot.restarts += 1
                log.warning(
                    "camera %s: worker exited (code %s), restart %d of %d in %.0f s",
                    name,
                    code,
                    len(slot.restart_times),
                    self._max_restarts,
                    self._window,
                )
                self._spawn(slot)
        for event in failed:
            self._emit(event)

    # --- pump ----------------------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while True:
            with self._lock:
                readers = {s.reader: s for s in self._slots.values() if s.reader is not None}
                readers.update(self._orphans)
            if not readers:
                if self._halt.is_set():
                    return
                time.sleep(self._poll)
                continue
            try:
                ready = wait(list(readers), timeout=self._poll)
            except OSError:
                ready = []
            for conn in ready:
                self._read_one(conn, readers[conn])  # type: ignore[index]
            if self._halt.is_set() and not ready and all(s.process is None for s in self._slots.values()):
                with self._lock:
                    for conn in [*self._orphans, *(s.reader for s in self._slots.values() if s.reader)]:
                        conn.close()
                    self._orphans.clear()
                    for s in self._slots.values():
                        s.reader = None
                return

    def _read_one(self, conn: Connection, slot: _Slot) -> None:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
            # The child exited (or was killed mid-write): this pipe is done; the watchdog restarts.
            with self._lock:
                if slot.reader is conn:
                    slot.reader = None
                self._orphans.pop(conn, None)
            conn.close()
            return
        with self._lock:
            orphan = conn in self._orphans
            if not orphan:
                slot.last_heard = self._mono()
        if orphan:  # a dead worker's last words: its events count, its state is history
            if kind == "event" and not isinstance(payload, CameraStateChanged):
                self._emit(payload)
            elif kind == "log":
                self._log(payload)
            return
        if kind == "event":
            self._note_state(slot, payload)
            self._emit(payload)
        elif kind == "status":
            with self._lock:
                slot.status = payload
                if slot.state not in ("failed", "stopped"):
                    slot.state, slot.detail = payload.state, payload.detail
                    if payload.state == "stopped" and slot.wanted:
                        slot.state = "starting"
        elif kind == "log":
            self._log(payload)
        elif kind == "snapshot":
            with self._lock:
                slot.snapshot, slot.snapshot_seq = payload, slot.snapshot_seq + 1
                self._snapshots.notify_all()

    @staticmethod
    def _log(record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)

    def _note_state(self, slot: _Slot, event: Any) -> None:
        if isinstance(event, CameraStateChanged):
            with self._lock:
                if slot.state not in ("failed", "stopped"):
                    slot.state, slot.detail = event.state, event.detail

    def _emit(self, event: Any) -> None:
        with self._sink_lock:
            self._sink_since = self._mono()
            try:
                self._sink(event)
            except Exception:  # a sink bug must not stop the cameras
                log.exception("camera event sink failed on %s", type(event).__name__)
            finally:
                self._sink_since = None
