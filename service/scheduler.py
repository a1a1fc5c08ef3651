"""The scheduler part: APScheduler 3.x in a thread pool, running the periodic jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from service.context import AppContext
from service.retention import purge_expired

log = logging.getLogger(__name__)


class SchedulerComponent:
    name = "scheduler"

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self.jobs: list[tuple[str, Callable[[], object], int]] = [
            ("retention", self._retention, 3600),
        ]

    def _retention(self) -> dict[str, Any] | None:
        """One instance of a fleet purges (whoever holds the retention lease); the others skip."""
        from service.fleet import RETENTION_LEASE

        if self.ctx.leases.holds(RETENTION_LEASE) is None:
            return None
        return purge_expired(self.ctx)

    def add_job(self, name: str, func: Callable[[], object], every_s: int) -> None:
        """Other parts register their periodic work here before start()."""
        self.jobs.append((name, func, every_s))

    async def start(self) -> None:
        for name, func, every in self.jobs:
            self.scheduler.add_job(func, "interval", seconds=every, id=name, name=name, next_run_time=None)
        self.scheduler.start()
        # Run each job once at start (e.g. purge what fell due while the service was down).
        for job in self.scheduler.get_jobs():
            job.modify(next_run_time=self.ctx.clock())

    async def stop(self) -> None:
        await asyncio.to_thread(self.scheduler.shutdown, wait=True)
