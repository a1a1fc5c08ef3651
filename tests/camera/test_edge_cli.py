"""`baywarden worker` as an operator runs it on an edge box: the real CLI process reads a real RTSP stream
with the default recogniser (ONNX detector + RapidOCR) and posts the car's arrival to a real central
service with a device token; SIGTERM stops it cleanly and says what is left in the spool."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, select

from api.routes.tokens import create_token
from models.db import make_engine, upgrade
from models.tables import Role, StoredEvent
from tests.foundation.helpers import LiveServer, free_port, make_settings

from .helpers import CLIP_BAY, CLIP_PLATE, RtspServer, need_gstreamer, wait_until

pytestmark = pytest.mark.timeout(300)


def arrivals(settings) -> list[StoredEvent]:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        rows = list(db.exec(select(StoredEvent).where(StoredEvent.kind == "vehicle_arrived")))
    engine.dispose()
    return rows


def test_worker_cli_forwards_a_real_arrival(tmp_path: Path) -> None:
    need_gstreamer()
    central = make_settings(tmp_path / "central", f"sqlite:///{tmp_path / 'central.db'}", port=free_port())
    upgrade(central.db_url)
    engine = make_engine(central.db_url)
    with Session(engine) as db:
        _, token = create_token(db, "edge-north", Role.device, actor="test")
    engine.dispose()
    rtsp = RtspServer().start()
    centre = LiveServer(central).start()
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    config = edge_dir / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(edge_dir / "data"),
        "cameras": [{"name": "north", "url": rtsp.url, "fps": 5,
                     "zones": [{"bay_id": "B1", "polygon": [list(p) for p in CLIP_BAY]}]}],
    }))
    proc = subprocess.Popen(
        [sys.executable, "-m", "baywarden.cli", "worker", "--camera", "north", "--central", centre.url,
         "--config", str(config)],
        env={"PATH": "/usr/bin:/bin", "BAYWARDEN_TOKEN": token, "HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (event,) = wait_until(lambda: arrivals(central), 180, 0.5, "the worker's arrival at the centre")
        assert event.payload["plate"] == CLIP_PLATE and event.payload["camera"] == "north"
        assert event.payload["bay_id"] == "B1"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        centre.stop()
        rtsp.stop()
    assert proc.returncode == 0, err[-2000:]
    assert "camera north running; forwarding to" in err and "events left in the spool" in err
    assert token not in err  # the device token never reaches the log


def test_worker_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                      "cameras": [{"name": "north", "url": "rtsp://127.0.0.1:1/x"}]}))
    base = [sys.executable, "-m", "baywarden.cli", "worker", "--config", str(config), "--token", "t"]
    r = subprocess.run([*base, "--camera", "south", "--central", "http://127.0.0.1:1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "no camera named 'south'" in r.stderr and "known: north" in r.stderr
    r = subprocess.run([*base, "--camera", "north", "--central", "ftp://centre"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--central must be an http" in r.stderr
