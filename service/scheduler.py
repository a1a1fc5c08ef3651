"""The scheduler part: APScheduler 3.x in a thread pool, running the periodic jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlmodel import delete

from models.tables import (
    AuditLog,
    IntakeReceipt,
    LoginThrottle,
    OperatorSession,
    PlateReadRow,
    Presence,
    StoredEvent,
    TimerRow,
)
from service.context import AppContext
from service.runtime_settings import effective_retention

log = logging.getLogger(__name__)


def purge_expired(ctx: AppContext) -> dict[str, int]:
    """Retention: drop expired sessions, stale throttles, and reads, presences, events, done timers,
    audit rows and evidence files past their retention."""
    now = ctx.clock()
    counts = {}
    with ctx.session() as db:
        counts["sessions"] = db.exec(delete(OperatorSession).where(OperatorSession.expires_at <= now)).rowcount
        stale = now - timedelta(days=1)
        counts["throttles"] = db.exec(
            delete(LoginThrottle).where(LoginThrottle.window_started_at < stale)
            .where((LoginThrottle.locked_until == None) | (LoginThrottle.locked_until < now))  # noqa: E711
        ).rowcount
        retention = effective_retention(ctx, db)  # settings page edits apply at the next run
        cutoff = now - timedelta(days=retention.audit_days)
        counts["audit"] = db.exec(delete(AuditLog).where(AuditLog.at < cutoff)).rowcount
        reads_cutoff = now - timedelta(days=retention.reads_days)
        counts["reads"] = db.exec(delete(PlateReadRow).where(PlateReadRow.at < reads_cutoff)).rowcount
        counts["presences"] = db.exec(
            delete(Presence).where(Presence.departed_at != None).where(Presence.departed_at < reads_cutoff)  # noqa: E711
        ).rowcount
        counts["events"] = db.exec(delete(StoredEvent).where(StoredEvent.at < reads_cutoff)).rowcount
        # Fired or cancelled timers are kept only for the events that may still name them: none once
        # those are gone (a timer event for a missing row concerns no bay). Pending ones stay, however old.
        counts["timers"] = db.exec(
            delete(TimerRow).where(TimerRow.state == "done").where(TimerRow.due_at < reads_cutoff)
        ).rowcount
        # Receipts only guard against replays inside the signature window; two days is ample.
        counts["receipts"] = db.exec(
            delete(IntakeReceipt).where(IntakeReceipt.received_at < now - timedelta(days=2))
        ).rowcount
        db.commit()
    from anpr.evidence import purge_older_than

    counts["evidence_files"] = purge_older_than(ctx.settings.evidence_dir, retention.evidence_days, now)
    if any(counts.values()):
        log.info("retention purge: %s", counts)
    return counts


class SchedulerComponent:
    name = "scheduler"

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self.jobs: list[tuple[str, Callable[[], object], int]] = [
            ("retention", self._retention, 3600),
        ]

    def _retention(self) -> dict[str, int] | None:
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
