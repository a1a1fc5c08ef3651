"""Group commit for outside reads: the requests and messages that arrive together are stored together.

Each HTTP request or MQTT message is checked and its pictures saved by its own thread
(`service.sources.prepare_reads`); the database work goes to one writer thread, which takes every job
waiting (up to `max_batch`), stores them in ONE transaction (`store_batch`: a fixed number of queries per
batch) with each source's counter moved once, commits, and only then answers each job. Under load a
commit serves dozens of reads; alone, a read is stored as soon as it comes. The thread keeps reads in
arrival order, so one bay's reads are applied one at a time and in order.

If a batch fails (e.g. an id that another instance stored at the same moment), its jobs are stored
again one by one on the per-read path with savepoints, so one bad job never takes others with it.
The thread stops after `idle_s` without work and starts again with the next job.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.events import EventEnvelope
from models.settings import SourceSettings
from service.sources import Prepared, count, store_batch, store_prepared

log = logging.getLogger(__name__)


@dataclass
class _Job:
    source: SourceSettings
    items: list[Prepared]
    now: datetime
    future: Future[list[EventEnvelope]] = field(default_factory=Future)


class IntakeWriter:
    def __init__(self, ctx: Any, max_batch: int = 200, idle_s: float = 30.0) -> None:
        self.ctx = ctx
        self.max_batch = max_batch
        self.idle_s = idle_s
        self._q: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0  # transactions committed
        self.jobs = 0  # jobs answered

    def backlog(self) -> int:
        return self._q.qsize()

    def submit(self, source: SourceSettings, items: list[Prepared], now: datetime) -> Future[list[EventEnvelope]]:
        """Queue one request's reads; the future gives the envelopes stored (publish them) or the error."""
        job = _Job(source, items, now)
        with self._lock:
            self._q.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
                self._thread.start()
        return job.future

    async def store(self, source: SourceSettings, items: list[Prepared], now: datetime) -> list[EventEnvelope]:
        return await asyncio.wrap_future(self.submit(source, items, now))

    def _run(self) -> None:
        while True:
            try:
                job = self._q.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._q.empty():
                        self._thread = None
                        return
                continue
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[_Job]) -> None:
        try:
            results = self._together(batch)
        except Exception as exc:
            log.warning("a batch of %d intake jobs failed (%s); storing them one by one", len(batch),
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            for job in batch:
                try:
                    self._answer(job, self._alone(job))
                except Exception as one:
                    self._answer(job, one)
            return
        for job, stored in zip(batch, results, strict=True):
            self._answer(job, stored)

    def _together(self, batch: list[_Job]) -> list[list[EventEnvelope]]:
        with self.ctx.session() as db:
            results = store_batch(db, [(j.source, j.items, j.now) for j in batch])
            accepted: Counter[str] = Counter(j.source.name for j in batch)
            last = {j.source.name: j.now for j in batch}
            for name, n in accepted.items():
                count(db, name, last[name], accepted=n)
            db.commit()
        self.batches += 1
        return results

    def _alone(self, job: _Job) -> list[EventEnvelope]:
        with self.ctx.session() as db:
            stored = store_prepared(db, job.source, job.items, job.now)
            count(db, job.source.name, job.now)
            db.commit()
        self.batches += 1
        return stored

    def _answer(self, job: _Job, result: list[EventEnvelope] | BaseException) -> None:
        self.jobs += 1
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)
