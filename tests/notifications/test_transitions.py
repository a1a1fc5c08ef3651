"""The outbox state changes as plain functions of (row, result, now): no database, a fake clock, a fixed RNG."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from enforcement.channels import SendResult
from enforcement.outbox import RetryPolicy, claim_changes, resend_changes, result_changes
from models.outbox import OutboxChannel, OutboxMessage, OutboxState
from tests.conftest import FakeClock

POLICY = RetryPolicy(max_attempts=4, base_delay_s=60, max_delay_s=600, jitter=0.25, lease_s=120)


class FixedRng:
    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


def row(clock: FakeClock, **kw: object) -> OutboxMessage:
    fields: dict[str, object] = {
        "idempotency_key": "k1",
        "channel": OutboxChannel.email,
        "recipient": "driver@baywarden.example",
        "template": "test_email",
        "next_attempt_at": clock.now,
        "created_at": clock.now,
        "updated_at": clock.now,
    }
    fields.update(kw)
    return OutboxMessage(**fields)  # type: ignore[arg-type]


def apply(r: OutboxMessage, changes: dict[str, object]) -> OutboxMessage:
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def test_claim_counts_the_attempt_and_leases_the_row(clock: FakeClock) -> None:
    r = apply(row(clock), claim_changes(row(clock), clock.now, POLICY, "tok1"))
    assert r.state == OutboxState.sending
    assert r.attempts == 1
    assert r.claim_token == "tok1"
    assert r.next_attempt_at == clock.now + timedelta(seconds=120)
    assert r.last_attempt_at == clock.now


def test_success_marks_sent_with_the_provider_id(clock: FakeClock) -> None:
    r = apply(row(clock), claim_changes(row(clock), clock.now, POLICY, "t"))
    clock.advance(seconds=3)
    ch = result_changes(r, SendResult.sent("250 queued as X"), clock.now, POLICY, FixedRng(0.5))
    assert ch["state"] == OutboxState.sent
    assert ch["sent_at"] == clock.now
    assert ch["provider_message_id"] == "250 queued as X"


@pytest.mark.parametrize(
    ("attempts", "rng", "expected_s"),
    [
        (1, 0.0, 60),  # no jitter drawn: the full base delay
        (1, 1.0, 45),  # the most jitter: 25 % shorter
        (2, 0.0, 120),
        (3, 0.5, 240 * 0.875),
        (3, 0.0, 240),
    ],
)
def test_retry_backs_off_exponentially_with_jitter(
    clock: FakeClock, attempts: int, rng: float, expected_s: float
) -> None:
    r = row(clock, state=OutboxState.sending, attempts=attempts)
    ch = result_changes(r, SendResult.retry("421 try later"), clock.now, POLICY, FixedRng(rng))
    assert ch["state"] == OutboxState.failed
    assert ch["next_attempt_at"] == clock.now + timedelta(seconds=expected_s)
    assert ch["last_error"] == "421 try later"


def test_backoff_is_capped_and_honours_retry_after(clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=50, base_delay_s=60, max_delay_s=600, jitter=0.0)
    r = row(clock, state=OutboxState.sending, attempts=30)
    ch = result_changes(r, SendResult.retry("busy"), clock.now, policy, FixedRng(0.0))
    assert ch["next_attempt_at"] == clock.now + timedelta(seconds=600)
    r = row(clock, state=OutboxState.sending, attempts=1)
    ch = result_changes(r, SendResult.retry("429", retry_after_s=300), clock.now, policy, FixedRng(0.0))
    assert ch["next_attempt_at"] == clock.now + timedelta(seconds=300)
    ch = result_changes(r, SendResult.retry("429", retry_after_s=99999), clock.now, policy, FixedRng(0.0))
    assert ch["next_attempt_at"] == clock.now + timedelta(seconds=600)  # a provider cannot park a row for a day


def test_jitter_spreads_retries_with_a_real_rng(clock: FakeClock) -> None:
    rng = random.Random(7)
    r = row(clock, state=OutboxState.sending, attempts=2)
    delays = {result_changes(r, SendResult.retry("x"), clock.now, POLICY, rng)["next_attempt_at"] for _ in range(20)}
    assert len(delays) == 20
    assert all(clock.now + timedelta(seconds=90) <= d <= clock.now + timedelta(seconds=120) for d in delays)


def test_permanent_error_is_dead_at_once(clock: FakeClock) -> None:
    r = row(clock, state=OutboxState.sending, attempts=1)
    ch = result_changes(r, SendResult.give_up("550 user unknown"), clock.now, POLICY, FixedRng(0.5))
    assert ch["state"] == OutboxState.dead
    assert ch["last_error"] == "550 user unknown"


def test_out_of_attempts_is_dead(clock: FakeClock) -> None:
    r = row(clock, state=OutboxState.sending, attempts=POLICY.max_attempts)
    ch = result_changes(r, SendResult.retry("timeout"), clock.now, POLICY, FixedRng(0.5))
    assert ch["state"] == OutboxState.dead
    assert ch["last_error"] == "gave up after 4 attempts: timeout"


def test_a_row_that_keeps_losing_its_dispatcher_dies_at_claim(clock: FakeClock) -> None:
    r = row(clock, state=OutboxState.sending, attempts=POLICY.max_attempts, last_error="421 busy")
    ch = claim_changes(r, clock.now, POLICY, "t9")
    assert ch["state"] == OutboxState.dead
    assert "lease expired" in ch["last_error"] and "421 busy" in ch["last_error"]
    # Below the limit a stuck row is simply claimed again.
    r = row(clock, state=OutboxState.sending, attempts=1)
    assert claim_changes(r, clock.now, POLICY, "t9")["attempts"] == 2


def test_result_needs_a_claimed_row(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="not sending"):
        result_changes(row(clock, state=OutboxState.sent), SendResult.sent(), clock.now, POLICY, FixedRng(0))


def test_resend_revives_dead_and_failed_rows_only(clock: FakeClock) -> None:
    for state in (OutboxState.dead, OutboxState.failed):
        r = row(clock, state=state, attempts=4, claim_token="old", last_error="550")
        clock.advance(minutes=5)
        ch = resend_changes(r, clock.now, "new")
        assert ch == {
            "state": OutboxState.pending,
            "attempts": 0,
            "next_attempt_at": clock.now,
            "claim_token": "new",
            "updated_at": clock.now,
        }
    for state in (OutboxState.pending, OutboxState.sending, OutboxState.sent):
        with pytest.raises(ValueError, match="only dead or failed"):
            resend_changes(row(clock, state=state), clock.now, "new")


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=60, max_delay_s=10)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.0)
