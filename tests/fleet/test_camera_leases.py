"""Camera workers across nodes: each enabled camera runs on exactly one node of the fleet, a camera
pinned to a node only there, the cameras of a node that dies start on another node in time, and a
node that joins gets its share back.
Real supervisors and worker processes (their cameras are unreachable, so they keep reconnecting)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlmodel import Session, select

from models.db import upgrade
from models.tables import FleetInstance
from service.build import build_context
from service.camera_control import CameraComponent
from service.fleet import LeaseKeeper, lease_owners
from tests.camera.recognizers import make_null_recognizer
from tests.foundation.helpers import make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(180)]
TAKEOVER_S = 2.0
CAMERAS = [{"name": "free1", "url": "rtsp://127.0.0.1:1/a", "fps": 1},
           {"name": "free2", "url": "rtsp://127.0.0.1:1/b", "fps": 1},
           {"name": "pinned", "url": "rtsp://127.0.0.1:1/c", "fps": 1, "node": "node-b"}]


def _instance(tmp_path, url, node):
    settings = make_settings(
        tmp_path / node, url, ha={"takeover_s": TAKEOVER_S, "node": node}, cameras=CAMERAS,
        components={"api": False, "scheduler": False, "enforcement": False, "cameras": True, "relay": False},
    )
    ctx = build_context(settings, components=[])
    return ctx, LeaseKeeper(ctx, 0, roles=["cameras"]), CameraComponent(ctx, make_null_recognizer)


def _running(cam: CameraComponent) -> set[str]:
    return {c["name"] for c in CAMERAS if cam.supervisor.is_wanted(c["name"])}


async def _until(cond, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def test_each_camera_runs_once_pinned_ones_where_pinned_and_a_dead_nodes_cameras_move(tmp_path, postgres_url):
    upgrade(postgres_url)
    ctx_a, keeper_a, cam_a = _instance(tmp_path, postgres_url, "node-a")
    ctx_b, keeper_b, cam_b = _instance(tmp_path, postgres_url, "node-b")
    ctx_a2, keeper_a2, cam_a2 = _instance(tmp_path / "again", postgres_url, "node-a")

    async def main() -> float:
        for part in (keeper_a, cam_a, keeper_b, cam_b):
            await part.start()
        try:
            both = {"free1", "free2", "pinned"}
            await _until(lambda: _running(cam_a) | _running(cam_b) == both, 20, "every camera to run")
            await asyncio.sleep(TAKEOVER_S)  # a few lease rounds: nothing moves or doubles
            assert not _running(cam_a) & _running(cam_b)
            assert "pinned" in _running(cam_b) and "pinned" not in _running(cam_a)
            owners = lease_owners(ctx_a.engine, "camera.")
            assert {n: o.split(":")[0] for n, o in owners.items()}["pinned"] == "node-b"
            # node-a dies: its lease rounds and heartbeats stop, its workers with it.
            moved = _running(cam_a)
            assert moved, "node-a started first and leads the unpinned cameras"
            keeper_a._halt.set()
            cam_a._halt.set()
            await asyncio.to_thread(cam_a.supervisor.stop)
            took = await _until(lambda: moved <= _running(cam_b), 4 * TAKEOVER_S, "node-b to take the cameras")
            # node-a comes back: node-b hands it unpinned cameras until each runs its fair share.
            await keeper_a2.start()
            await cam_a2.start()
            await _until(lambda: len(_running(cam_a2)) == 1 and _running(cam_b) == {"pinned"} | (
                {"free1", "free2"} - _running(cam_a2)), 10 * TAKEOVER_S, "the cameras to spread again")
            await asyncio.sleep(TAKEOVER_S)
            assert not _running(cam_a2) & _running(cam_b)
            return took
        finally:
            for part in (cam_a2, keeper_a2, cam_b, keeper_b, cam_a, keeper_a):
                await part.stop()

    took = asyncio.run(main())
    assert took <= TAKEOVER_S + 1.5, took
    with Session(ctx_b.engine) as db:
        assert {i.node for i in db.exec(select(FleetInstance))} <= {"node-a", "node-b"}
    for c in (ctx_a, ctx_b, ctx_a2):
        c.engine.dispose()


def test_a_pinned_camera_waits_for_its_node(tmp_path, postgres_url):
    upgrade(postgres_url)
    ctx_a, keeper_a, cam_a = _instance(tmp_path, postgres_url, "node-a")

    async def main() -> set[str]:
        await keeper_a.start()
        await cam_a.start()
        try:
            await _until(lambda: {"free1", "free2"} <= _running(cam_a), 20, "the unpinned cameras")
            await asyncio.sleep(TAKEOVER_S)
            return _running(cam_a)
        finally:
            await cam_a.stop()
            await keeper_a.stop()

    assert asyncio.run(main()) == {"free1", "free2"}  # node-b is not there: "pinned" runs nowhere
    ctx_a.engine.dispose()
