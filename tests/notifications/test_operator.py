"""Operator alerts go through the outbox too: the channel hands an alert to a recorder (here the alerts table)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from enforcement.channels import OperatorAlert, OperatorChannel
from enforcement.outbox import RetryPolicy, dispatch_due, enqueue
from models.outbox import OutboxMessage, OutboxState
from models.tables import Alert
from tests.conftest import FakeClock

Factory = Callable[[], Session]
POLICY = RetryPolicy(max_attempts=3, base_delay_s=60, max_delay_s=600, jitter=0.0, lease_s=60)


def test_blacklist_alert_is_recorded_once_after_a_failed_attempt(
    engine: Engine, factory: Factory, clock: FakeClock
) -> None:
    calls: list[OperatorAlert] = []

    def record(alert: OperatorAlert) -> int:
        calls.append(alert)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        with Session(engine) as db:
            row = Alert(
                at=clock.now,
                kind=alert.kind,
                severity=alert.severity,
                title=alert.title,
                detail=alert.detail,
                subject=alert.subject,
            )
            db.add(row)
            db.commit()
            assert row.id is not None
            return row.id

    with factory() as db:
        enqueue(
            db,
            idempotency_key="blacklist:XY999ZZ:visit-7",
            channel="operator",
            recipient="operators",
            template="blacklist_alert",
            subject="Blacklisted vehicle XY999ZZ in bay B-01",
            context={
                "plate": "XY999ZZ",
                "bay": "B-01",
                "site": "Depot",
                "seen_at": "09:00",
                "reason": "stolen <per police>",
                "severity": "critical",
            },
            now=clock.now,
        )
        db.commit()
    channel = OperatorChannel(record)
    assert dispatch_due(factory, {"operator": channel}, clock, 10, policy=POLICY).retried == 1
    clock.advance(seconds=61)
    assert dispatch_due(factory, {"operator": channel}, clock, 10, policy=POLICY).sent == 1
    with factory() as db:
        (alert,) = db.exec(select(Alert)).all()
        assert (alert.kind, alert.severity, alert.subject) == ("blacklist", "critical", "XY999ZZ")
        assert alert.title == "Blacklisted vehicle XY999ZZ in bay B-01"
        assert "Reason on the list: stolen <per police>" in alert.detail
        row = db.exec(select(OutboxMessage)).one()
        assert (row.state, row.provider_message_id, row.attempts) == (OutboxState.sent, str(alert.id), 2)
        assert row.sent_at == clock.now
        assert row.last_attempt_at == clock.now and row.created_at == clock.now - timedelta(seconds=61)
    assert {a.idempotency_key for a in calls} == {"blacklist:XY999ZZ:visit-7"}
