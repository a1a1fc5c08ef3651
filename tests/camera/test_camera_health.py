"""Issue 18 row 5: a camera unreachable past `camera_down_alert_s` raises one operator alert, closed by
the system when pictures come again. A real supervisor and worker process (the camera is unreachable,
so the worker keeps reconnecting); recovery is the supervisor reporting `running`."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from sqlmodel import Session, select

from models.db import upgrade
from models.tables import Alert
from service.build import build_context
from service.camera_control import CAMERA_DOWN, CameraComponent
from tests.camera.recognizers import make_null_recognizer
from tests.foundation.helpers import make_settings

pytestmark = [pytest.mark.timeout(120)]


def test_an_unreachable_camera_raises_one_alert_and_its_return_closes_it(tmp_path, sqlite_url, clock):
    settings = make_settings(tmp_path, sqlite_url, camera_down_alert_s=60,
                             cameras=[{"name": "gate", "url": "rtsp://127.0.0.1:1/x", "fps": 1}])
    upgrade(sqlite_url)
    ctx = build_context(settings, clock=clock, components=[])
    cam = CameraComponent(ctx, make_null_recognizer)

    async def main() -> list[tuple[str, str | None]]:
        await cam.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                st = {s.name: s for s in cam.supervisor.status()}["gate"]
                if st.state in ("starting", "reconnecting"):
                    break
                await asyncio.sleep(0.2)
            assert cam.check_health() == 0  # down, but not for long yet
            clock.advance(seconds=59)
            assert cam.check_health() == 0
            clock.advance(seconds=2)
            assert cam.check_health() == 1
            clock.advance(seconds=60)
            assert cam.check_health() == 0  # one alert, not one per check
            real = cam.supervisor.status
            cam.supervisor.status = lambda: [dataclasses.replace(s, state="running") for s in real()]
            assert cam.check_health() == 1  # pictures again: the alert is closed
        finally:
            await cam.stop()
        with Session(ctx.engine) as db:
            return [(a.kind, a.acknowledged_by) for a in db.exec(select(Alert).order_by(Alert.id))]

    alerts = asyncio.run(main())
    ctx.engine.dispose()
    assert alerts == [(CAMERA_DOWN, "system"), ("camera_up", None)]
