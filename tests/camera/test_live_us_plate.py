"""Per-visit reading end to end with the product's reader: a US plate on a real scene, streamed over
RTSP, read frame after frame by the ensemble (trained recogniser + RapidOCR, calibrated confidence) in
a worker process, and combined into exactly one arrival with the right plate."""

from __future__ import annotations

from pathlib import Path

import pytest

from anpr.factory import RecognizerSpec
from anpr.supervisor import CameraSupervisor
from models.events import VehicleArrived, VehicleDeparted

from .helpers import US_PLATE, RtspServer, ensure_us_clip, need_gstreamer
from .test_live import OPTIONS, Events, camera

pytestmark = pytest.mark.slow


def test_us_plate_on_a_real_scene_arrives_once_with_the_right_text(tmp_path: Path) -> None:
    need_gstreamer()
    srv = RtspServer(ensure_us_clip()).start()
    events = Events()
    spec = RecognizerSpec(ocr="ensemble", region="generic")
    sup = CameraSupervisor([camera(srv.url)], spec, events, tmp_path / "ev", options=OPTIONS)
    sup.start()
    try:
        arrived = events.wait_for(lambda e: isinstance(e, VehicleArrived), 90, "VehicleArrived")
        departed = events.wait_for(lambda e: isinstance(e, VehicleDeparted), 60, "VehicleDeparted")
    finally:
        sup.stop()
        srv.stop()
    assert arrived.plate == US_PLATE, (arrived.plate, arrived.confidence)
    assert departed.presence_id == arrived.presence_id and departed.plate == US_PLATE
    arrivals = [e for e in events.all if isinstance(e, VehicleArrived)]
    assert len(arrivals) == 1
    # The frames agree, so the visit's read is confident; a single frame's read could not say more.
    assert arrived.confidence >= 0.5
