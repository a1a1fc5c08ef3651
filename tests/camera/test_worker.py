"""The worker's frame path in-process, on synthetic frames: motion gate -> region of interest ->
recogniser -> bay zones -> grouping -> events. The recogniser here really looks at the pixels
(it finds bright plate-shaped blobs) but reads no text, so every plate is unreadable (None)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np

from anpr.capture import Frame
from anpr.grouping import GroupingOptions
from anpr.motion import MotionOptions
from anpr.types import PlateCandidate
from anpr.worker import CameraWorker, WorkerOptions
from models.events import PlateRead, VehicleArrived, VehicleDeparted
from models.settings import BayZone, CameraSettings

from .helpers import FakeClock

B1 = [(0.0, 0.0), (320.0, 0.0), (320.0, 480.0), (0.0, 480.0)]
B2 = [(320.0, 0.0), (640.0, 0.0), (640.0, 480.0), (320.0, 480.0)]


class BlobRecognizer:
    """Bright, plate-shaped (2:1 to 6:1) blobs; no OCR. Records the image sizes it was given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def recognize(self, image: np.ndarray) -> list[PlateCandidate]:
        self.shapes.append(image.shape[:2])
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        _, mask = cv2.threshold(grey, 200, 255, cv2.THRESH_BINARY)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            if h >= 6 and 2 <= w / h <= 6:
                out.append(PlateCandidate((float(x), float(y), float(x + w), float(y + h)), 0.9, None, 0.0))
        return out


class ListSink:
    def __init__(self) -> None:
        self.msgs: list = []

    def put(self, msg) -> None:
        self.msgs.append(msg)

    def events(self, kind=object) -> list:
        return [p for k, p in self.msgs if k == "event" and isinstance(p, kind)]


def scene(plate_at: tuple[int, int] | None) -> np.ndarray:
    img = np.full((480, 640, 3), 60, np.uint8)
    cv2.rectangle(img, (20, 20), (80, 40), (90, 90, 90), -1)  # something dull and still
    if plate_at is not None:
        x, y = plate_at
        cv2.rectangle(img, (x, y), (x + 80, y + 20), (255, 255, 255), -1)
    return img


def test_worker_maps_plates_to_bays_and_emits_presence(tmp_path: Path) -> None:
    clock = FakeClock()
    t0 = clock.now
    mono = [0.0]
    cam = CameraSettings(
        name="cam1",
        url="rtsp://127.0.0.1:1/x",
        fps=5,
        zones=[BayZone(bay_id="B1", polygon=B1), BayZone(bay_id="B2", polygon=B2)],
    )
    opts = WorkerOptions(
        motion=MotionOptions(settle_s=2, check_interval_s=5),
        grouping=GroupingOptions(arrival_timeout_s=3, depart_after_s=4, min_sightings=2),
    )
    rec, sink = BlobRecognizer(), ListSink()
    worker = CameraWorker(cam, rec, sink, tmp_path, opts, clock=clock, monotonic=lambda: mono[0])

    def feed(seconds: float, plate_at: tuple[int, int] | None) -> None:
        for _ in range(int(seconds * 5)):
            mono[0] += 0.2
            clock.advance(0.2)
            worker.process(Frame(0, scene(plate_at), mono[0], clock.now))
            for event in worker.grouper.tick():
                sink.put(("event", event))

    feed(2, None)  # empty bays: looked at once (first frame), then only on the check interval
    looks_empty = len(rec.shapes)
    feed(1, (300, 300))  # a plate moves into B2 (its centre is at x=340)...
    feed(1, (420, 300))
    feed(10, (420, 300))  # ...and stays: checks only every 5 s once settled
    feed(12, None)  # gone

    assert looks_empty <= 2
    reads = sink.events(PlateRead)
    assert reads and {r.bay_id for r in reads} == {"B2"}
    assert reads[-1].box == (420.0, 300.0, 501.0, 321.0)  # frame pixels, not region-of-interest pixels
    (arrived,) = sink.events(VehicleArrived)
    assert (arrived.bay_id, arrived.plate) == ("B2", None)
    assert (tmp_path / arrived.evidence.frame_path).is_file() and arrived.evidence.crop_path
    (departed,) = sink.events(VehicleDeparted)
    assert departed.presence_id == arrived.presence_id
    assert departed.first_seen - t0 < timedelta(seconds=3.3)
    parked_looks = rec.shapes[looks_empty:]
    assert len(parked_looks) < 5 * 26 / 3  # the gate kept the recogniser off most frames
    status = worker.status()
    assert status.frames_processed == 5 * 26 and status.frames_recognised == len(rec.shapes)


def test_recogniser_errors_are_counted_not_raised(tmp_path: Path) -> None:
    class Broken:
        def recognize(self, image):
            raise RuntimeError("onnx session lost")

    cam = CameraSettings(name="cam1", url="rtsp://127.0.0.1:1/x", fps=5)
    sink = ListSink()
    worker = CameraWorker(cam, Broken(), sink, tmp_path)
    worker.process(Frame(1, scene(None), 0.0, FakeClock().now))
    st = worker.status()
    assert st.recognise_errors == 1 and "onnx session lost" in st.detail
    assert worker.grouper.track("cam1") is None  # a failed look is not an empty bay either
