"""Edge worker -> centre: events and evidence survive a centre that goes away and comes back."""

import time
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from sqlmodel import Session, select

from anpr.forwarder import EventForwarder
from api.routes.tokens import create_token
from models.db import make_engine, upgrade
from models.events import Evidence, VehicleArrived
from models.tables import Presence, Role, StoredEvent
from tests.foundation.helpers import LiveServer, free_port, make_settings

JPEG = cv2.imencode(".jpg", np.full((16, 32, 3), 90, np.uint8))[1].tobytes()


def arrival(i: int) -> VehicleArrived:
    return VehicleArrived(
        at=datetime(2026, 11, 2, 9, i, tzinfo=UTC), presence_id=f"p-{i}", camera="gate", bay_id="B1",
        plate=f"AB{i:03d}CD", confidence=0.95,
        evidence=Evidence(frame_path=f"gate/2026-11-02/p{i}-frame.jpg", crop_path=f"gate/2026-11-02/p{i}-crop.jpg"),
    )


@pytest.fixture
def central(tmp_path):
    settings = make_settings(tmp_path / "central", f"sqlite:///{tmp_path / 'central.db'}", port=free_port())
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        _, secret = create_token(db, "edge-gate", Role.device, actor="test")
    engine.dispose()
    c = LiveServer(settings).start()
    yield c, secret
    c.stop()


def stored(settings):
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        events = list(db.exec(select(StoredEvent)))
        presences = list(db.exec(select(Presence)))
    engine.dispose()
    return events, presences


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_centre_down_then_back_loses_and_doubles_nothing(central, tmp_path):
    c, secret = central
    edge_evidence = tmp_path / "edge" / "evidence"
    for i in range(6):
        d = edge_evidence / "gate" / "2026-11-02"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"p{i}-frame.jpg").write_bytes(JPEG)
        (d / f"p{i}-crop.jpg").write_bytes(JPEG)
    fwd = EventForwarder(f"http://127.0.0.1:{c.settings.port}", secret, tmp_path / "edge" / "spool.db",
                         edge_evidence, max_backoff_s=0.5)
    fwd.start()
    try:
        fwd(arrival(0))
        fwd(arrival(1))
        wait_for(lambda: len(stored(c.settings)[0]) == 2)
        c.stop()  # the centre goes away
        for i in range(2, 6):
            fwd(arrival(i))
        wait_for(lambda: fwd.failures > 0)
        assert len(fwd.spool) == 4
        c.start()  # and comes back
        wait_for(lambda: len(fwd.spool) == 0)
    finally:
        fwd.stop()
    events, presences = stored(c.settings)
    assert len(events) == 6 and len({e.event_id for e in events}) == 6
    assert sorted(p.plate for p in presences) == [f"AB{i:03d}CD" for i in range(6)]
    for i in range(6):
        assert (c.settings.evidence_dir / "gate" / "2026-11-02" / f"p{i}-crop.jpg").read_bytes() == JPEG


def test_spool_survives_restart_of_the_edge(central, tmp_path):
    c, secret = central
    spool = tmp_path / "edge" / "spool.db"
    fwd = EventForwarder("http://127.0.0.1:1", secret, spool, None, max_backoff_s=0.2)  # nothing listens
    fwd.start()
    fwd(arrival(7))
    wait_for(lambda: fwd.failures > 0)
    fwd.stop(drain_s=0)
    again = EventForwarder(f"http://127.0.0.1:{c.settings.port}", secret, spool, None)
    assert len(again.spool) == 1
    again.start()
    wait_for(lambda: len(again.spool) == 0)
    again.stop()
    assert [p.plate for p in stored(c.settings)[1]] == ["AB007CD"]


def test_wrong_token_keeps_events(central, tmp_path):
    c, _ = central
    fwd = EventForwarder(f"http://127.0.0.1:{c.settings.port}", "bw_wrong", tmp_path / "s.db", None, max_backoff_s=0.2)
    fwd.start()
    fwd(arrival(8))
    wait_for(lambda: fwd.failures > 0)
    assert "401" in fwd.last_error and len(fwd.spool) == 1
    fwd.stop(drain_s=0)


def test_evidence_the_centre_refuses_does_not_block_the_event(central, tmp_path):
    """The centre keeps evidence write-once and checks it is an image: a refused file is skipped, not
    retried forever ahead of every later event."""
    c, secret = central
    edge_evidence = tmp_path / "edge" / "evidence"
    d = edge_evidence / "gate" / "2026-11-02"
    d.mkdir(parents=True)
    (d / "p9-frame.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "p9-crop.jpg").write_bytes(JPEG)
    fwd = EventForwarder(f"http://127.0.0.1:{c.settings.port}", secret, tmp_path / "edge" / "spool.db",
                         edge_evidence, max_backoff_s=0.2)
    fwd.start()
    try:
        fwd(arrival(9))
        wait_for(lambda: len(fwd.spool) == 0)
    finally:
        fwd.stop()
    assert [p.plate for p in stored(c.settings)[1]] == ["AB009CD"]
    assert not (c.settings.evidence_dir / "gate/2026-11-02/p9-frame.jpg").exists()
    assert (c.settings.evidence_dir / "gate/2026-11-02/p9-crop.jpg").read_bytes() == JPEG
