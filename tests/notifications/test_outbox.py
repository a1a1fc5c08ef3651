"""The outbox against a real database (SQLite and PostgreSQL): enqueue, claiming, leases, fencing, operator actions."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, func, select

from enforcement.channels import SendResult
from enforcement.outbox import (
    RetryPolicy,
    count_by_state,
    dispatch_due,
    enqueue,
    list_dead_letters,
    list_messages,
    purge_finished,
    resend,
)
from models.outbox import OutboxChannel, OutboxMessage, OutboxState, PushSubscription
from tests.conftest import FakeClock
from tests.notifications.helpers import Crash, CrashingChannel, RecordingChannel, enqueue_notice, notice_context

Factory = Callable[[], Session]
POLICY = RetryPolicy(max_attempts=3, base_delay_s=60, max_delay_s=3600, jitter=0.25, lease_s=120)


def rows(factory: Factory) -> list[OutboxMessage]:
    with factory() as db:
        return list(db.exec(select(OutboxMessage).order_by(OutboxMessage.idempotency_key)).all())


def test_enqueue_is_idempotent_on_the_key(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        first = enqueue_notice(db, "visit-1:notice", now=clock.now)
        again = enqueue_notice(db, "visit-1:notice", recipient="other@baywarden.example", now=clock.now)
        assert again.id == first.id
        first_id = first.id
        db.commit()
    with factory() as db:  # and across transactions
        later = enqueue_notice(db, "visit-1:notice", now=clock.advance(hours=1))
        db.commit()
        assert later.id == first_id
        assert later.recipient == "driver@baywarden.example"
        assert db.exec(select(func.count()).select_from(OutboxMessage)).one() == 1
    (r,) = rows(factory)
    assert r.state == OutboxState.pending
    assert r.next_attempt_at == r.created_at == FakeClock().now
    assert r.context["amount"] == "12.50"  # a Decimal is stored as its exact string


def test_enqueue_belongs_to_the_callers_transaction(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        enqueue_notice(db, "rolled-back", now=clock.now)
        db.rollback()
    assert rows(factory) == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"template": "nope"}, "unknown notification template"),
        ({"context": {"plate": "X"}}, "needs context keys"),
        ({"context": notice_context(driver_url="javascript:alert(1)")}, "http"),
        ({"recipient": "not an address"}, "not an e-mail address"),
        ({"subject": "hi\r\nBcc: everyone@example.com"}, "single line"),
        ({"channel": "pigeon"}, "pigeon"),
        ({"channel": "webpush", "recipient": "nosuchsub"}, "no push subscription"),
        ({"context": notice_context(extra=object())}, "JSON"),
    ],
)
def test_enqueue_refuses_what_could_never_be_sent(factory: Factory, kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "idempotency_key": "k",
        "channel": "email",
        "recipient": "driver@baywarden.example",
        "template": "penalty_notice",
        "context": notice_context(),
    }
    args.update(kw)
    with factory() as db, pytest.raises(ValueError, match=message):
        enqueue(db, **args)  # type: ignore[arg-type]


def test_dispatch_sends_due_rows_once_and_leaves_the_future_alone(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        for i in range(3):
            enqueue_notice(db, f"n{i}", now=clock.now)
        enqueue_notice(db, "later", now=clock.now, not_before=clock.now + timedelta(minutes=10))
        db.commit()
    channel = RecordingChannel()
    stats = dispatch_due(factory, {OutboxChannel.email: channel}, clock.now, 50)
    assert (stats.claimed, stats.sent, stats.retried, stats.dead) == (3, 3, 0, 0)
    assert dispatch_due(factory, {"email": channel}, clock.now, 50).claimed == 0
    clock.advance(minutes=10)
    assert dispatch_due(factory, {"email": channel}, clock, 50).sent == 1
    assert sorted(channel.sent) == ["later", "n0", "n1", "n2"]
    for r in rows(factory):
        assert r.state == OutboxState.sent
        assert r.attempts == 1
        assert r.provider_message_id == f"p-{r.idempotency_key}"


def test_limit_bounds_one_run(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        for i in range(5):
            enqueue_notice(db, f"n{i}", now=clock.now)
        db.commit()
    channel = RecordingChannel()
    assert dispatch_due(factory, {"email": channel}, clock.now, 2).sent == 2
    assert dispatch_due(factory, {"email": channel}, clock.now, 10).sent == 3


def test_retry_then_dead_after_max_attempts(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        enqueue_notice(db, "flaky", now=clock.now)
        db.commit()
    failing = RecordingChannel(lambda m: SendResult.retry("421 4.3.2 try again later"))
    rng = random.Random(1)
    for attempt in range(1, POLICY.max_attempts + 1):
        stats = dispatch_due(factory, {"email": failing}, clock.now, 10, policy=POLICY, rng=rng)
        assert stats.claimed == 1
        (r,) = rows(factory)
        assert r.attempts == attempt
        if attempt < POLICY.max_attempts:
            assert r.state == OutboxState.failed
            assert stats.retried == 1
            assert dispatch_due(factory, {"email": failing}, clock.now, 10, policy=POLICY).claimed == 0  # not yet
            clock.now = r.next_attempt_at
    assert r.state == OutboxState.dead
    assert r.last_error == "gave up after 3 attempts: 421 4.3.2 try again later"
    with factory() as db:
        assert [d.id for d in list_dead_letters(db)] == [r.id]


def test_a_channel_that_raises_is_retried_not_fatal(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        enqueue_notice(db, "a", now=clock.now)
        enqueue_notice(db, "b", now=clock.now)
        db.commit()

    def answer(m: object) -> SendResult:
        raise RuntimeError("bug in a channel")

    stats = dispatch_due(factory, {"email": RecordingChannel(answer)}, clock.now, 10, policy=POLICY)
    assert (stats.claimed, stats.retried) == (2, 2)
    assert all(r.state == OutboxState.failed and "bug in a channel" in (r.last_error or "") for r in rows(factory))


def test_rows_of_an_unconfigured_channel_wait(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        enqueue_notice(db, "hook", recipient="ops-hook", channel="webhook", now=clock.now)
        db.commit()
    assert dispatch_due(factory, {"email": RecordingChannel()}, clock.now, 10).claimed == 0
    assert rows(factory)[0].state == OutboxState.pending


def test_lease_expiry_reclaims_a_row_left_sending_by_a_crashed_dispatcher(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        enqueue_notice(db, "stuck", now=clock.now)
        db.commit()
    with pytest.raises(Crash):
        dispatch_due(factory, {"email": CrashingChannel()}, clock.now, 10, policy=POLICY)
    (r,) = rows(factory)
    assert (r.state, r.attempts) == (OutboxState.sending, 1)
    channel = RecordingChannel()
    clock.advance(seconds=POLICY.lease_s - 1)
    assert dispatch_due(factory, {"email": channel}, clock, 10, policy=POLICY).claimed == 0  # lease still held
    clock.advance(seconds=2)
    assert dispatch_due(factory, {"email": channel}, clock, 10, policy=POLICY).sent == 1
    (r,) = rows(factory)
    assert (r.state, r.attempts, channel.sent) == (OutboxState.sent, 2, ["stuck"])


def test_a_row_that_keeps_crashing_its_dispatcher_ends_dead(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        enqueue_notice(db, "poison", now=clock.now)
        db.commit()
    for _ in range(POLICY.max_attempts):
        with pytest.raises(Crash):
            dispatch_due(factory, {"email": CrashingChannel()}, clock, 10, policy=POLICY)
        clock.advance(seconds=POLICY.lease_s + 1)
    channel = RecordingChannel()
    stats = dispatch_due(factory, {"email": channel}, clock, 10, policy=POLICY)
    assert (stats.claimed, stats.dead, channel.sent) == (1, 1, [])
    (r,) = rows(factory)
    assert r.state == OutboxState.dead and "lease expired" in (r.last_error or "")


def test_a_stale_dispatcher_cannot_overwrite_the_result_of_the_one_that_reclaimed(
    factory: Factory, clock: FakeClock
) -> None:
    """Dispatcher A stalls inside send() past its lease; B reclaims and sends; A's late result is dropped."""
    with factory() as db:
        enqueue_notice(db, "slow", now=clock.now)
        db.commit()
    entered, release = threading.Event(), threading.Event()

    def stall(m: object) -> SendResult:
        entered.set()
        release.wait(10)
        return SendResult.retry("A's late timeout")

    a_stats = []
    a = threading.Thread(
        target=lambda: a_stats.append(
            dispatch_due(factory, {"email": RecordingChannel(stall)}, clock, 1, policy=POLICY)
        )
    )
    a.start()
    assert entered.wait(10)
    clock.advance(seconds=POLICY.lease_s + 1)
    b = RecordingChannel()
    assert dispatch_due(factory, {"email": b}, clock, 10, policy=POLICY).sent == 1
    release.set()
    a.join(10)
    assert a_stats[0].lost == 1
    (r,) = rows(factory)
    assert (r.state, r.attempts, r.last_error) == (OutboxState.sent, 2, None)


def test_concurrent_dispatchers_send_each_row_once(factory: Factory, clock: FakeClock) -> None:
    n = 24
    with factory() as db:
        for i in range(n):
            enqueue_notice(db, f"c{i:02d}", now=clock.now)
        db.commit()
    channel = RecordingChannel()
    stats = []
    threads = [
        threading.Thread(target=lambda: stats.append(dispatch_due(factory, {"email": channel}, clock.now, n)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(channel.sent) == [f"c{i:02d}" for i in range(n)]
    assert sum(s.sent for s in stats) == n
    assert all(r.state == OutboxState.sent and r.attempts == 1 for r in rows(factory))


def test_resend_and_listings(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        enqueue_notice(db, "ok", now=clock.now)
        enqueue_notice(db, "bad", recipient="bounce@baywarden.example", now=clock.now)
        db.commit()
    channel = RecordingChannel(
        lambda m: SendResult.give_up("550 no such user") if m.recipient.startswith("bounce") else SendResult.sent()
    )
    dispatch_due(factory, {"email": channel}, clock.now, 10, policy=POLICY)
    with factory() as db:
        (dead,) = list_dead_letters(db)
        assert dead.idempotency_key == "bad" and dead.last_error == "550 no such user"
        assert {r.idempotency_key for r in list_messages(db, states=[OutboxState.sent])} == {"ok"}
        counts = count_by_state(db)
        assert counts[OutboxState.sent] == 1 and counts[OutboxState.dead] == 1 and counts[OutboxState.pending] == 0
        with pytest.raises(ValueError, match="only dead or failed"):
            resend(db, list_messages(db, states=[OutboxState.sent])[0].id, now=clock.now)
        with pytest.raises(LookupError):
            resend(db, "0" * 32, now=clock.now)
        db.rollback()
        clock.advance(hours=1)
        revived = resend(db, dead.id, now=clock.now)
        assert (revived.state, revived.attempts, revived.next_attempt_at) == (OutboxState.pending, 0, clock.now)
        db.commit()
    channel.answer = lambda m: SendResult.sent("fixed")
    assert dispatch_due(factory, {"email": channel}, clock.now, 10).sent == 1
    with factory() as db:
        assert list_dead_letters(db) == []
        assert count_by_state(db)[OutboxState.sent] == 2
        assert purge_finished(db, clock.now - timedelta(minutes=30)) == 1  # the first, sent an hour ago
        db.commit()
    assert [r.idempotency_key for r in rows(factory)] == ["bad"]


def test_webpush_gone_expires_the_subscription_and_later_rows_die_unsent(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        sub = PushSubscription(endpoint="https://push.example/1", p256dh="k", auth="a", created_at=clock.now)
        db.add(sub)
        db.flush()
        enqueue_notice(db, "p1", recipient=sub.id, channel="webpush", now=clock.now)
        db.commit()
        sub_id = sub.id
    channel = RecordingChannel(lambda m: SendResult.give_up("HTTP 410", recipient_gone=True))
    assert dispatch_due(factory, {"webpush": channel}, clock.now, 10).dead == 1
    with factory() as db:
        assert db.get(PushSubscription, sub_id).expired_at == clock.now  # type: ignore[union-attr]
        enqueue_notice(db, "p2", recipient=sub_id, channel="webpush", now=clock.now)
        db.commit()
    seen: list[object] = []
    channel.answer = lambda m: (seen.append(m.push), SendResult.give_up("no push subscription"))[1]
    dispatch_due(factory, {"webpush": channel}, clock.now, 10)
    assert seen == [None]  # the dispatcher hands the channel no target for an expired subscription
    assert {r.idempotency_key: r.state for r in rows(factory)} == {"p1": OutboxState.dead, "p2": OutboxState.dead}


def test_amounts_keep_their_exact_value(factory: Factory, clock: FakeClock) -> None:
    with factory() as db:
        r = enqueue_notice(db, "money", now=clock.now)
        db.commit()
        assert Decimal(r.context["amount"]) == Decimal("12.50")


def test_concurrent_enqueue_of_one_key_makes_one_row(factory: Factory, clock: FakeClock) -> None:
    """B enqueues while A's insert of the same key is uncommitted: B waits, then returns A's row."""
    got: list[str] = []
    with factory() as a:
        a_id = enqueue_notice(a, "race", now=clock.now).id

        def b() -> None:
            with factory() as db:
                got.append(enqueue_notice(db, "race", now=clock.now).id)
                db.commit()

        t = threading.Thread(target=b)
        t.start()
        t.join(0.3)
        assert t.is_alive()  # B is waiting on A's uncommitted key
        a.commit()
    t.join(10)
    assert got == [a_id]
    assert len(rows(factory)) == 1


def test_postgres_claims_with_skip_locked(engine: Engine, factory: Factory, clock: FakeClock) -> None:
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cur, stmt, *a: statements.append(stmt))
    with factory() as db:
        enqueue_notice(db, "one", now=clock.now)
        db.commit()
    dispatch_due(factory, {"email": RecordingChannel()}, clock.now, 10)
    claims = [s for s in statements if "FROM outbox" in s and "LIMIT" in s]
    assert claims
    if engine.dialect.name == "postgresql":
        assert all("FOR UPDATE SKIP LOCKED" in s for s in claims)
    else:
        assert not any("FOR UPDATE" in s for s in claims)  # SQLite has no row locks: the token CAS guards it
