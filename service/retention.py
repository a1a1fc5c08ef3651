"""Retention: personal data is kept only as long as `retention` says, and evidence as long as a penalty needs it.

The hourly job (one instance of a fleet, `service.scheduler`) deletes:
- expired operator sessions, login throttles after a day, intake replay receipts after two days;
- audit rows after `audit_days`;
- after `reads_days`: plate reads, departed presences, stored events, fired or cancelled timers, access-point
  decisions, acknowledged alerts, sent and dead notifications, expired push subscriptions, and visits that
  ended without a penalty;
- settled penalties (paid, waived, no charge, voided) `penalties_days` after they were settled, with their
  visit (and push subscriptions of a plate that has no penalty left);
- evidence images after `evidence_days`.

A penalty that is kept holds what it rests on: its visit, the visit's presences and their evidence images stay
however old they are. A driver who disputes a notice after `evidence_days` still sees the picture, and an
operator can still show why the fee was raised; once the penalty is settled and its `penalties_days` have
passed, all of it goes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import exists, or_
from sqlmodel import Session, delete, select

from enforcement.outbox import purge_finished
from models.outbox import PushSubscription
from models.tables import (
    SETTLED_PENALTY_STATES,
    AccessLog,
    Alert,
    AuditLog,
    IntakeReceipt,
    LoginThrottle,
    OperatorSession,
    Penalty,
    PlateReadRow,
    Presence,
    StoredEvent,
    TimerRow,
    VisitRow,
)
from service.context import AppContext
from service.runtime_settings import effective_retention

log = logging.getLogger(__name__)

T = TypeVar("T")
_CHUNK = 500  # ids per IN (...) list: well inside SQLite's and PostgreSQL's parameter limits


def _chunks(items: list[T], n: int = _CHUNK) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def held_presences(db: Session, arrived_before: datetime) -> set[str]:
    """Presences of visits that still have a penalty row, among visits that arrived before `arrived_before`
    (younger ones hold nothing retention would touch yet)."""
    has_penalty = exists().where(Penalty.visit_id == VisitRow.visit_id)
    held: set[str] = set()
    rows = db.exec(select(VisitRow.data).where(VisitRow.arrived_at < arrived_before).where(has_penalty))
    for data in rows:
        data = data or {}
        held.update(p for p in [data.get("presence_id"), *(data.get("presence_ids") or [])] if isinstance(p, str))
    return held


def _evidence_paths(db: Session, presence_ids: Iterable[str]) -> set[str]:
    paths: set[str] = set()
    for ids in _chunks(sorted(presence_ids)):
        for crop, frame in db.exec(select(Presence.crop_path, Presence.frame_path)
                                   .where(Presence.id.in_(ids))):  # type: ignore[union-attr]
            paths.update(p for p in (crop, frame) if p)
    return paths


def _delete_presences(db: Session, before: datetime, keep: set[str]) -> int:
    """Departed presences older than `before`, except those a kept penalty rests on."""
    old = Presence.departed_at != None, Presence.departed_at < before  # noqa: E711
    if not keep:
        return int(db.exec(delete(Presence).where(*old)).rowcount or 0)
    gone = [pid for pid in db.exec(select(Presence.id).where(*old)) if pid not in keep]
    for ids in _chunks(gone):
        db.exec(delete(Presence).where(Presence.id.in_(ids)))  # type: ignore[union-attr]
    return len(gone)


def purge_expired(ctx: AppContext) -> dict[str, Any]:
    """Delete everything past its retention (see the module docstring); counts per kind of row."""
    now = ctx.clock()
    counts: dict[str, Any] = {}
    with ctx.session() as db:
        counts["sessions"] = db.exec(delete(OperatorSession).where(OperatorSession.expires_at <= now)).rowcount
        stale = now - timedelta(days=1)
        counts["throttles"] = db.exec(
            delete(LoginThrottle).where(LoginThrottle.window_started_at < stale)
            .where((LoginThrottle.locked_until == None) | (LoginThrottle.locked_until < now))  # noqa: E711
        ).rowcount
        retention = effective_retention(ctx, db)  # settings page edits apply at the next run
        counts["audit"] = db.exec(delete(AuditLog).where(AuditLog.at < now - timedelta(days=retention.audit_days))
                                  ).rowcount
        reads_cutoff = now - timedelta(days=retention.reads_days)
        evidence_cutoff = now - timedelta(days=retention.evidence_days)
        penalties_cutoff = now - timedelta(days=retention.penalties_days)

        counts["penalties"] = db.exec(
            delete(Penalty).where(Penalty.state.in_(SETTLED_PENALTY_STATES))  # type: ignore[attr-defined]
            .where(Penalty.updated_at < penalties_cutoff)
        ).rowcount
        has_penalty = exists().where(Penalty.visit_id == VisitRow.visit_id)
        counts["visits"] = db.exec(
            delete(VisitRow).where(VisitRow.departed_at != None).where(VisitRow.departed_at < reads_cutoff)  # noqa: E711
            .where(~has_penalty)
        ).rowcount
        # A day of margin: a visit's presences and pictures can be a little older than its arrival.
        held = held_presences(db, max(reads_cutoff, evidence_cutoff) + timedelta(days=1))
        held_files = _evidence_paths(db, held)
        counts["presences"] = _delete_presences(db, reads_cutoff, held)

        counts["reads"] = db.exec(delete(PlateReadRow).where(PlateReadRow.at < reads_cutoff)).rowcount
        counts["events"] = db.exec(delete(StoredEvent).where(StoredEvent.at < reads_cutoff)).rowcount
        # Fired or cancelled timers are kept only for the events that may still name them: none once
        # those are gone (a timer event for a missing row concerns no bay). Pending ones stay, however old.
        counts["timers"] = db.exec(
            delete(TimerRow).where(TimerRow.state == "done").where(TimerRow.due_at < reads_cutoff)
        ).rowcount
        counts["access_log"] = db.exec(delete(AccessLog).where(AccessLog.at < reads_cutoff)).rowcount
        counts["alerts"] = db.exec(
            delete(Alert).where(Alert.acknowledged_at != None).where(Alert.at < reads_cutoff)  # noqa: E711
        ).rowcount
        # Notifications carry addresses and plates. Their idempotency keys go with them, which is safe:
        # the events that could enqueue one again are older than reads_days and gone too.
        counts["notifications"] = purge_finished(db, reads_cutoff)
        plate_has_penalty = exists().where(Penalty.plate == PushSubscription.owner)
        counts["push_subscriptions"] = db.exec(
            delete(PushSubscription).where(or_(
                PushSubscription.expired_at < reads_cutoff,  # type: ignore[operator]
                (PushSubscription.created_at < penalties_cutoff) & ~plate_has_penalty,
            ))
        ).rowcount
        # Receipts only guard against replays inside the signature window; two days is ample.
        counts["receipts"] = db.exec(
            delete(IntakeReceipt).where(IntakeReceipt.received_at < now - timedelta(days=2))
        ).rowcount
        db.commit()
    from anpr.evidence import purge_older_than

    counts["evidence_files"] = purge_older_than(ctx.settings.evidence_dir, retention.evidence_days, now,
                                                keep=held_files)  # day folders removed
    counts["evidence_held"] = len(held_files)  # pictures a kept penalty rests on (however old)
    if any(v for k, v in counts.items() if k != "evidence_held"):
        log.info("retention purge: %s", counts)
    return counts
