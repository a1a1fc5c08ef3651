"""The OCPP relay part: the relay runs in a process of its own, this side stores what it decodes.

`ocpp_link.relay_process` forwards frames and decodes them; its events arrive here over a pipe and
one thread stores them, many per transaction. If the database is slow or down this thread stops
reading, the relay process's pipe backlog grows to its bound and further events are dropped and
counted there: frames between chargers and the CSMS never wait for any of it. Events that reach
this side but cannot be stored are counted as lost. A relay process that dies is started again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import select
import threading
import time
from typing import Any

from models.events import EventEnvelope
from models.eventstore import ingest
from service.context import AppContext

log = logging.getLogger(__name__)

_BATCH = 500  # events per transaction at most
_START_TIMEOUT = 30.0
_RESTART_DELAY = 1.0


class RelayComponent:
    name = "ocpp-relay"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.stored = 0
        self.lost = 0
        self.restarts = 0
        self._mp = mp.get_context("spawn")
        self._process: Any = None
        self._stream: Any = None  # the pipe from the relay process, buffered binary
        self._control: Any = None  # multiprocessing connection to the relay process
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._lock = threading.Lock()  # one metrics request at a time, none while restarting
        self._metrics: dict[str, int] = {}  # the relay process's counters, as last read

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._spawn)
        self._thread = threading.Thread(target=self._run, name="relay-events", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping = True
        with self._lock:
            try:
                if self._control is not None:
                    self._control.send("stop")
            except OSError:
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        if self._process is not None:
            await asyncio.to_thread(self._process.join, 5)
            if self._process.is_alive():
                log.warning("the relay process did not stop; killing it")
                self._process.kill()
                await asyncio.to_thread(self._process.join, 5)

    def _spawn(self) -> None:
        from ocpp_link.relay_process import read_message, relay_main

        settings = self.ctx.settings
        reader, writer = self._mp.Pipe(duplex=False)
        control_r, control_w = self._mp.Pipe()  # duplex: commands out, counters back
        process = self._mp.Process(
            target=relay_main, args=(settings.relay, settings.log_level, writer, control_r), name="ocpp-relay",
            daemon=True,
        )
        process.start()
        writer.close()
        control_r.close()
        stream = os.fdopen(os.dup(reader.fileno()), "rb")
        reader.close()
        ready, _, _ = select.select([stream], [], [], _START_TIMEOUT)
        message = read_message(stream) if ready else None
        if message is None or message[0] != "ready":
            process.kill()
            process.join(5)
            stream.close()
            control_w.close()
            why = message[1] if message is not None else "no answer" if not ready else "it exited"
            raise RuntimeError(f"the OCPP relay did not start on {settings.relay.host}:{settings.relay.port}: {why}")
        self._process, self._stream, self._control = process, stream, control_w
        log.info("OCPP relay process %d listening on %s:%d", process.pid, settings.relay.host, message[1])

    # --- events ---------------------------------------------------------------------------------

    def _run(self) -> None:
        from ocpp_link.relay_process import read_message

        while True:
            message = read_message(self._stream)
            if message is None or message[0] == "stopped":
                if message is not None and message[1]:
                    log.warning("the relay process dropped %d events it could not hand over", message[1])
                if self._stopping or not self._restart():
                    return
                continue
            kind, body = message
            if kind == "events":
                batch = list(body)
                # Whatever else has arrived goes into the same transaction.
                while len(batch) < _BATCH and select.select([self._stream], [], [], 0)[0]:
                    more = read_message(self._stream)
                    if more is None:
                        break
                    if more[0] != "events":  # "stopped": the next read sees the end of the stream
                        break
                    batch.extend(more[1])
                self._store_all(batch)

    def _restart(self) -> bool:
        code = self._process.exitcode if self._process is not None else None
        log.error("the OCPP relay process ended unexpectedly (exit code %s); starting it again", code)
        with self._lock:
            if self._stream is not None:
                self._stream.close()
            if self._control is not None:
                self._control.close()
            while not self._stopping:
                time.sleep(_RESTART_DELAY)
                try:
                    self._spawn()
                    self.restarts += 1
                    return True
                except Exception as exc:
                    log.error("%s; trying again", exc)
        return False

    def _store_all(self, batch: list[Any]) -> None:
        try:
            self._store(batch)
        except Exception:
            # One bad event must not cost the others: store them one by one, count what fails.
            log.exception("could not store %d charger events together; storing one by one", len(batch))
            for ev in batch:
                try:
                    self._store([ev])
                except Exception:
                    self.lost += 1
                    log.exception("could not store a %s event", getattr(ev, "kind", "charger"))

    def _store(self, events: list[Any]) -> None:
        with self.ctx.session() as db:
            for ev in events:
                ingest(db, EventEnvelope(event_id=self.ctx.ids(), event=ev), source="relay", now=self.ctx.clock())
            db.commit()
        self.stored += len(events)

    # --- metrics --------------------------------------------------------------------------------

    def relay_metrics(self, timeout: float = 1.0) -> dict[str, int]:
        """The relay process's counters (asked for now; the last known ones if it does not answer)."""
        # Held for seconds while a dead relay process is started again: a scrape gets the last counters.
        if not self._lock.acquire(timeout=timeout):
            return dict(self._metrics)
        try:
            control = self._control
            if control is not None and not self._stopping:
                while control.poll():  # a late answer to a request that timed out
                    self._metrics = control.recv()
                control.send("metrics")
                if control.poll(timeout):
                    self._metrics = control.recv()
        except (OSError, EOFError):
            pass
        finally:
            self._lock.release()
        return dict(self._metrics)
