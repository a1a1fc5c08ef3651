"""The OCPP relay part: runs the relay on the service's event loop and stores decoded events.

The relay calls the sink from its decoder task; storing means database I/O, so the sink only puts
events on a bounded queue that a writer thread drains. If the database is slow or down the queue
fills and further events are counted as lost: frames between chargers and the CSMS never wait.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from api.context import AppContext
from models.events import EventEnvelope
from models.eventstore import ingest

log = logging.getLogger(__name__)


class RelayComponent:
    name = "ocpp-relay"

    def __init__(self, ctx: AppContext, queue_size: int = 10_000):
        self.ctx = ctx
        self.relay: Any = None
        self.queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=queue_size)
        self.writer: threading.Thread | None = None
        self.stored = 0
        self.lost = 0

    def _sink(self, events: list[Any]) -> None:
        try:
            self.queue.put_nowait(list(events))
        except queue.Full:
            self.lost += len(events)

    def _write(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            try:
                with self.ctx.session() as db:
                    for ev in batch:
                        ingest(db, EventEnvelope(event_id=self.ctx.ids(), event=ev), source="relay",
                               now=self.ctx.clock())
                    db.commit()
                self.stored += len(batch)
            except Exception:
                self.lost += len(batch)
                log.exception("could not store %d charger events", len(batch))

    async def start(self) -> None:
        from ocpp_link.decoder import OcppDecoder
        from ocpp_link.relay import OcppRelay, RelayConfig

        self.writer = threading.Thread(target=self._write, name="relay-event-writer", daemon=True)
        self.writer.start()
        self.relay = OcppRelay(RelayConfig.from_settings(self.ctx.settings.relay), OcppDecoder(), self._sink)
        await self.relay.start()

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        self.queue.put(None)
        if self.writer is not None:
            self.writer.join(timeout=10)
