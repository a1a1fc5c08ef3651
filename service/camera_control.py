"""The camera part of the service: runs the supervisor, stores what its workers see, controls it.

Workers emit domain events from their own processes; the supervisor hands them to `_sink` on its
pump thread, where each is stored through the event inbox (one DB transaction per event) and then
published to in-process listeners on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import select

from models.events import EventEnvelope
from models.eventstore import ingest
from models.leases import PgLeases
from models.tables import Alert, Camera
from service.camera_config import sync_config_cameras, to_settings
from service.context import AppContext
from service.fleet import fair_share

log = logging.getLogger(__name__)


CAMERA_DOWN = "camera_unreachable"


class CameraElsewhere(Exception):
    """In a fleet, the camera's worker runs (its lease is held) on another node."""


def camera_lease(name: str) -> str:
    return f"camera.{name}"


class CameraComponent:
    name = "cameras"

    def __init__(self, ctx: AppContext, recognizer_factory: Callable[[], Any], **supervisor_kw: Any):
        self.ctx = ctx
        self.factory = recognizer_factory
        self.supervisor_kw = supervisor_kw
        self.supervisor: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stored = 0
        self.failed = 0
        self._camera_list: list[Any] = []
        self._down_since: dict[str, datetime] = {}
        self._alerted: set[str] = set()
        self._leased: set[str] = set()
        self._stopped_by_hand: set[str] = set()
        self._backoff: dict[str, float] = {}
        self._halt = threading.Event()
        self._lease_thread: threading.Thread | None = None

    # --- sink (pump thread) ---------------------------------------------------------------------

    def _sink(self, event: Any) -> None:
        envelope = EventEnvelope(event_id=self.ctx.ids(), event=event)
        try:
            with self.ctx.session() as db:
                ingest(db, envelope, source="camera", now=self.ctx.clock())
                db.commit()
            self.stored += 1
        except Exception:
            self.failed += 1
            log.exception("could not store a %s event", getattr(event, "kind", "?"))
            return
        if self.loop is not None and not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.ctx.publish(envelope), self.loop)

    # --- lifecycle ------------------------------------------------------------------------------

    def _cameras(self) -> list[Any]:
        with self.ctx.session() as db:
            sync_config_cameras(db, self.ctx.settings.cameras, self.ctx.clock())
            self._camera_list = [to_settings(c) for c in db.exec(select(Camera).order_by(Camera.name))]
            return self._camera_list

    def _build(self) -> Any:
        from anpr.supervisor import CameraSupervisor

        return CameraSupervisor(
            self._cameras(), self.factory, self._sink, self.ctx.settings.evidence_dir, self.ctx.clock,
            **self.supervisor_kw,
        )

    @property
    def fleet(self) -> bool:
        """Several instances on PostgreSQL: each camera runs where its lease is held (`_lease_round`)."""
        return isinstance(self.ctx.leases, PgLeases)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.supervisor = await asyncio.to_thread(self._build)
        await asyncio.to_thread(self.supervisor.start, not self.fleet)
        self.ctx.cameras = self
        if self.fleet:
            self._halt.clear()
            await asyncio.to_thread(self._lease_round)
            self._lease_thread = threading.Thread(target=self._lease_loop, name="camera-leases", daemon=True)
            self._lease_thread.start()

    async def stop(self) -> None:
        self.ctx.cameras = None
        self._halt.set()
        if self._lease_thread is not None:
            await asyncio.to_thread(self._lease_thread.join, 10)
        if self.supervisor is not None:
            await asyncio.to_thread(self.supervisor.stop)
        for name in list(self._leased):
            await asyncio.to_thread(self.ctx.leases.release, camera_lease(name))
        self._leased.clear()

    # --- health: a camera without pictures for a while is an operator alert -----------------------

    def check_health(self) -> int:
        """Scheduler job. A started camera that has been connecting or reconnecting for longer than
        `camera_down_alert_s` raises one alert; when it delivers pictures again the alert is closed by
        the system and an info alert says so. Returns the alerts raised or closed."""
        sup = self.supervisor
        if sup is None:
            return 0
        now = self.ctx.clock()
        limit = timedelta(seconds=self.ctx.settings.camera_down_alert_s)
        changed = 0
        for st in sup.status():
            down = st.state in ("starting", "reconnecting") and sup.is_wanted(st.name)
            if down:
                since = self._down_since.setdefault(st.name, now)
                if now - since >= limit and st.name not in self._alerted:
                    changed += self._raise_down(st.name, since, st.detail, now)
                    self._alerted.add(st.name)
                continue
            self._down_since.pop(st.name, None)
            if st.state == "running" and st.name in self._alerted:
                changed += self._close_down(st.name, now)
            if st.state in ("running", "stopped", "failed"):
                self._alerted.discard(st.name)
        return changed

    def _raise_down(self, name: str, since: datetime, detail: str, now: datetime) -> int:
        with self.ctx.session() as db:
            exists = db.exec(select(Alert).where(Alert.kind == CAMERA_DOWN, Alert.subject == name[:128])
                             .where(Alert.acknowledged_at == None)).first()  # noqa: E711
            if exists is not None:
                return 0
            secs = int((now - since).total_seconds())
            db.add(Alert(at=now, kind=CAMERA_DOWN, severity="warning", subject=name[:128],
                         title=f"Camera {name} has delivered no picture for {secs} s",
                         detail=(detail or "no detail from the worker")[:2000]))
            db.commit()
        log.warning("camera %s: no picture for %s s, operators alerted", name, int((now - since).total_seconds()))
        return 1

    def _close_down(self, name: str, now: datetime) -> int:
        with self.ctx.session() as db:
            rows = list(db.exec(select(Alert).where(Alert.kind == CAMERA_DOWN, Alert.subject == name[:128])
                                .where(Alert.acknowledged_at == None)))  # noqa: E711
            for row in rows:
                row.acknowledged_at, row.acknowledged_by = now, "system"
                db.add(row)
            if rows:
                db.add(Alert(at=now, kind="camera_up", severity="info", subject=name[:128],
                             title=f"Camera {name} delivers pictures again"))
            db.commit()
        return len(rows)

    # --- fleet: one worker per camera across the instances ---------------------------------------

    def _lease_loop(self) -> None:
        every = self.ctx.leases.ttl_s / 3
        while not self._halt.wait(every):
            try:
                self._lease_round()
            except Exception:
                log.exception("camera lease round failed")

    def _node(self) -> str:
        return self.ctx.settings.ha.node or self.ctx.leases.owner.split(":")[0]

    def _lease_round(self) -> None:
        """Take, renew or drop each enabled camera's lease, and start or stop its worker to match.

        A camera pinned to a node (`node:` in the config file) is only ever taken by that node. The
        others go to any camera instance, at most a fair share each, and move when their instance
        dies (its lease expires after 0.6 x ha.takeover_s); a worker whose lease lapsed here (database
        unreachable) is stopped, so two nodes never read one camera for long."""
        sup = self.supervisor
        if sup is None:
            return
        node = self._node()
        pins = {c.name: c.node for c in self.ctx.settings.cameras}
        enabled = [c.name for c in self._camera_list if c.enabled]
        free = [n for n in enabled if not pins.get(n)]
        pinned = {n for n in enabled if pins.get(n)}
        share, someone_has_less = fair_share(self.ctx, "camera.", len(free), "cameras", self.ctx.leases.ttl_s)
        mono = time.monotonic()
        for name in enabled:
            pin = pins.get(name)
            lease = camera_lease(name)
            if pin and pin != node:
                token = None
            else:
                held = self.ctx.leases.holds(lease) is not None or bool(pin)
                room = len(self._leased - pinned) < share and self._backoff.get(name, 0.0) <= mono
                token = self.ctx.leases.acquire(lease) if held or room else None
            if token is not None:
                self._leased.add(name)
                if not sup.is_wanted(name) and name not in self._stopped_by_hand:
                    log.info("camera %s: lease taken on node %s, starting its worker", name, node)
                    sup.start_camera(name)
            else:
                self._leased.discard(name)
                if sup.is_wanted(name):
                    log.warning("camera %s: lease not held on node %s, stopping its worker", name, node)
                    sup.stop_camera(name)
        mine = sorted(self._leased - pinned)
        if len(mine) > share and someone_has_less:
            # A node joined (or came back): hand it one camera per round until the work is spread.
            give = mine[-1]
            log.info("camera %s: handed to a less busy node (%d held, fair share %d)", give, len(mine), share)
            sup.stop_camera(give)
            self.ctx.leases.release(camera_lease(give))
            self._leased.discard(give)
            self._backoff[give] = mono + 2 * self.ctx.leases.ttl_s

    # --- control (API) --------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        if self.supervisor is None:
            return []
        return [dataclasses.asdict(s) for s in self.supervisor.status()]

    async def start_camera(self, name: str) -> None:
        """Start by hand. In a fleet only where the camera's lease is (or can be) held (CameraElsewhere)."""
        if self.fleet:
            token = await asyncio.to_thread(self.ctx.leases.acquire, camera_lease(name))
            if token is None:
                raise CameraElsewhere(f"camera {name} runs on another node of the fleet; start it there")
            self._leased.add(name)
        self._stopped_by_hand.discard(name)
        await asyncio.to_thread(self.supervisor.start_camera, name)

    async def stop_camera(self, name: str) -> None:
        """Stop by hand. In a fleet this node keeps the lease, so no other node starts the camera,
        until it is started again or this node stops."""
        self._stopped_by_hand.add(name)
        await asyncio.to_thread(self.supervisor.stop_camera, name)

    async def snapshot(self, name: str, timeout: float = 2.5) -> tuple[bytes, Any] | None:
        """The running worker's newest frame as (JPEG, arrived at); None when it cannot say in time."""
        sup = self.supervisor
        if sup is None:
            return None
        return await asyncio.to_thread(sup.snapshot, name, timeout)

    async def start_all(self) -> None:
        """Start every camera: here all of them; in a fleet the ones whose leases this node holds or gets
        (the others run on their nodes), by forgetting the stops by hand and running a lease round."""
        if self.fleet:
            self._stopped_by_hand.clear()
            await asyncio.to_thread(self._lease_round)
            return
        for st in self.supervisor.status():
            await self.start_camera(st.name)

    async def stop_all(self) -> None:
        for st in reversed(self.supervisor.status()):
            await self.stop_camera(st.name)

    async def reload(self) -> None:
        """Camera configuration changed: rebuild the supervisor with the new list of cameras."""
        old = self.supervisor
        if old is not None:
            await asyncio.to_thread(old.stop)
        self.supervisor = await asyncio.to_thread(self._build)
        await asyncio.to_thread(self.supervisor.start, not self.fleet)
        if self.fleet:
            await asyncio.to_thread(self._lease_round)
