"""The camera part of the service: runs the supervisor, stores what its workers see, controls it.

Workers emit domain events from their own processes; the supervisor hands them to `_sink` on its
pump thread, where each is stored through the event inbox (one DB transaction per event) and then
published to in-process listeners on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from sqlmodel import select

from api.context import AppContext
from api.routes.cameras import sync_config_cameras, to_settings
from models.events import EventEnvelope
from models.eventstore import ingest
from models.tables import Camera

log = logging.getLogger(__name__)


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
            return [to_settings(c) for c in db.exec(select(Camera).order_by(Camera.name))]

    def _build(self) -> Any:
        from anpr.supervisor import CameraSupervisor

        return CameraSupervisor(
            self._cameras(), self.factory, self._sink, self.ctx.settings.evidence_dir, self.ctx.clock,
            **self.supervisor_kw,
        )

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.supervisor = await asyncio.to_thread(self._build)
        await asyncio.to_thread(self.supervisor.start)
        self.ctx.cameras = self

    async def stop(self) -> None:
        self.ctx.cameras = None
        if self.supervisor is not None:
            await asyncio.to_thread(self.supervisor.stop)

    # --- control (API) --------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        if self.supervisor is None:
            return []
        return [dataclasses.asdict(s) for s in self.supervisor.status()]

    async def start_camera(self, name: str) -> None:
        await asyncio.to_thread(self.supervisor.start_camera, name)

    async def stop_camera(self, name: str) -> None:
        await asyncio.to_thread(self.supervisor.stop_camera, name)

    async def snapshot(self, name: str, timeout: float = 2.5) -> tuple[bytes, Any] | None:
        """The running worker's newest frame as (JPEG, arrived at); None when it cannot say in time."""
        sup = self.supervisor
        if sup is None:
            return None
        return await asyncio.to_thread(sup.snapshot, name, timeout)

    async def start_all(self) -> None:
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
        await asyncio.to_thread(self.supervisor.start)
