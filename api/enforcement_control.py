"""The enforcement part: one thread reads the event inbox in order and feeds the core; the scheduler's
sweep feeds due timers through the same thread, so each bay sees its events strictly one at a time.

Reading the inbox by sequence (with a stored cursor) rather than trusting in-memory delivery means
an event stored while the engine was down or busy is still applied, once, after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from api.context import AppContext
from api.routes.cameras import sync_config_cameras
from enforcement.config import effective, sync_config_bays
from enforcement.service import EnforcementService, camera_zones
from models.events import EventEnvelope
from models.tables import Camera, ConsumerCursor, StoredEvent

log = logging.getLogger(__name__)
CURSOR = "enforcement"
# A sequence gap younger than this may be a transaction still committing (PostgreSQL): wait for it.
GAP_GRACE = timedelta(seconds=5)


class EnforcementComponent:
    name = "enforcement"

    def __init__(self, ctx: AppContext, notify: Any = None, poll_s: float = 0.5):
        self.ctx = ctx
        self.notify = notify
        self.poll_s = poll_s
        self.service: EnforcementService | None = None
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._sweep_due = threading.Event()
        self._thread: threading.Thread | None = None
        self._reload_waiters: list[threading.Event] = []
        self.lag = 0

    def _build(self, sync: bool = True) -> EnforcementService:
        """The service over the effective bays and rules (file + operators' edits) and the cameras' zones."""
        with self.ctx.session() as db:
            if sync:
                sync_config_cameras(db, self.ctx.settings.cameras, self.ctx.clock())
                sync_config_bays(db, self.ctx.settings.enforcement, self.ctx.clock())
            cfg = effective(db, self.ctx.settings.enforcement)
            cams = list(db.exec(select(Camera)))
        return EnforcementService(self.ctx.engine, cfg, camera_zones(cams), self.ctx.clock, self.notify)

    async def reload(self) -> None:
        """Rebuild the service after bays, rules or camera zones were edited. The swap happens on the
        engine thread between two events, so no event sees half of the old and half of the new set-up."""
        done = threading.Event()
        self._reload_waiters.append(done)
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._apply_reload()
        await asyncio.to_thread(done.wait, 15)

    async def start(self) -> None:
        self.service = await asyncio.to_thread(self._build)
        self.ctx.listeners.append(self._on_event)
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name="enforcement", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._on_event in self.ctx.listeners:
            self.ctx.listeners.remove(self._on_event)
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 15)

    def _on_event(self, _event: object) -> None:
        self._wake.set()

    def request_sweep(self) -> None:
        """Called by the scheduler: feed due timers on the engine thread."""
        self._sweep_due.set()
        self._wake.set()

    # --- the engine thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                if self._reload_waiters:
                    self._apply_reload()
                busy = self.drain()
                if self._sweep_due.is_set():
                    self._sweep_due.clear()
                    assert self.service is not None
                    self.service.sweep()
            except Exception:
                log.exception("enforcement loop failed; retrying")
                busy = False
            if not busy:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def _apply_reload(self) -> None:
        waiters, self._reload_waiters = self._reload_waiters, []
        try:
            self.service = self._build(sync=False)
            log.info("enforcement reloaded: %d bays", len(self.service.bays))
        except Exception:
            log.exception("enforcement reload failed; the previous set-up stays in force")
        finally:
            for w in waiters:
                w.set()

    def drain(self, batch: int = 200) -> bool:
        """Apply the next stored events in sequence order; True when there may be more."""
        assert self.service is not None
        now = self.ctx.clock()
        with Session(self.ctx.engine) as db:
            cur = db.get(ConsumerCursor, CURSOR) or ConsumerCursor(name=CURSOR, seq=0, updated_at=now)
            rows = list(db.exec(select(StoredEvent).where(StoredEvent.seq > cur.seq)  # type: ignore[operator]
                                .order_by(StoredEvent.seq).limit(batch)))
        last = cur.seq
        for row in rows:
            if row.seq != last + 1 and row.received_at > now - GAP_GRACE:
                break  # a lower sequence number may still be committing
            try:
                event = EventEnvelope.model_validate({"event_id": row.event_id, "event": row.payload}).event
                self.service.handle(event)
            except SQLAlchemyError:
                log.exception("database error applying event %s; will retry", row.event_id)
                break  # the cursor stays: nothing is skipped because the database hiccuped
            except Exception:
                # A bad event must not block every later one: log it loudly and move on.
                log.exception("event %s (%s) could not be applied; skipped", row.event_id, row.kind)
            last = row.seq or last
            with Session(self.ctx.engine) as db:
                c = db.get(ConsumerCursor, CURSOR) or ConsumerCursor(name=CURSOR, seq=0, updated_at=now)
                c.seq, c.updated_at = last, now
                db.add(c)
                db.commit()
        self.lag = len(rows) - (last - cur.seq)
        return len(rows) == batch
