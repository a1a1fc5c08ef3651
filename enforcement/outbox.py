"""The durable notification outbox: enqueue in the caller's transaction, dispatch at least once, never lose.

Life of a row: pending -> sending (claimed, leased until next_attempt_at) -> sent | failed (due again
after a backoff) | dead (permanent error or out of attempts; an operator may resend it).

- `enqueue` is idempotent on `idempotency_key` and never commits: the notification exists exactly when
  the decision that caused it does.
- `dispatch_due` claims one row at a time in a short transaction (PostgreSQL: `FOR UPDATE SKIP LOCKED`),
  sends with no transaction open, then records the result in a second one. Every claim writes a fresh
  `claim_token`, and results and claims are compare-and-set on it, so two dispatchers (or one whose lease
  ran out) can never both record a result for one claim.
- A dispatcher that dies between sending and recording leaves the row `sending`; once the lease runs out
  the row is due again and is sent a second time. Delivery is therefore at least once, and each channel
  carries a stable id derived from the idempotency key (e-mail Message-ID, webhook Idempotency-Key,
  Web Push Topic) so the receiving side can drop the duplicate.
- The state changes themselves are plain functions of (row, result, now): `claim_changes`,
  `result_changes`, `resend_changes`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol
from uuid import UUID

from pydantic import validate_email
from pydantic_core import PydanticCustomError
from sqlalchemy import delete, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from enforcement.channels import Channel, OutgoingMessage, PushTarget, SendResult, check_context
from models.base import Clock, new_id, utcnow
from models.outbox import OutboxChannel, OutboxMessage, OutboxState, PushSubscription

log = logging.getLogger(__name__)

DUE_STATES = (OutboxState.pending, OutboxState.failed, OutboxState.sending)  # sending: only once its lease ran out
RESENDABLE_STATES = (OutboxState.dead, OutboxState.failed)


class Rng(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter. The defaults ride out about 8.5 hours of outage before a row is dead."""

    max_attempts: int = 10
    base_delay_s: float = 60.0
    max_delay_s: float = 6 * 3600.0
    jitter: float = 0.25  # each delay is drawn from [delay * (1 - jitter), delay], so retries do not stampede
    lease_s: float = 120.0  # must exceed the slowest channel's timeout, or a slow send gets sent twice

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("retry policy needs max_attempts >= 1 and 0 < base_delay_s <= max_delay_s")
        if not 0 <= self.jitter < 1 or self.lease_s <= 0:
            raise ValueError("retry policy needs 0 <= jitter < 1 and lease_s > 0")

    def backoff_s(self, attempts: int, rng: Rng, retry_after_s: float | None = None) -> float:
        """Delay after the `attempts`-th failed attempt; never shorter than what the provider asked for."""
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempts - 1))
        delay *= 1 - self.jitter * rng.random()
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


DEFAULT_POLICY = RetryPolicy()


@dataclass
class DispatchStats:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0  # results not recorded: another dispatcher had claimed the row meanwhile


# --- pure state changes --------------------------------------------------------------------


def claim_changes(row: OutboxMessage, now: datetime, policy: RetryPolicy, token: str) -> dict[str, Any]:
    """A dispatcher takes a due row: one more attempt, leased until now + lease_s."""
    if row.state == OutboxState.sending and row.attempts >= policy.max_attempts:
        # Claimed max_attempts times and no result ever came back: this row keeps killing its dispatcher.
        return {
            "state": OutboxState.dead,
            "claim_token": token,
            "updated_at": now,
            "last_error": f"no result recorded after {row.attempts} claims (lease expired); "
            f"last error: {row.last_error or 'none'}"[:2000],
        }
    return {
        "state": OutboxState.sending,
        "attempts": row.attempts + 1,
        "claim_token": token,
        "next_attempt_at": now + timedelta(seconds=policy.lease_s),
        "last_attempt_at": now,
        "updated_at": now,
    }


def result_changes(
    row: OutboxMessage, result: SendResult, now: datetime, policy: RetryPolicy = DEFAULT_POLICY, rng: Rng = random
) -> dict[str, Any]:
    """What one send attempt's result does to its (claimed) row: sent, a scheduled retry, or dead."""
    if row.state != OutboxState.sending:
        raise ValueError(f"outbox row {row.id} is {row.state}, not sending: no attempt to record")
    if result.ok:
        return {
            "state": OutboxState.sent,
            "sent_at": now,
            "updated_at": now,
            "provider_message_id": (result.provider_id or "")[:300] or None,
        }
    error = (result.error or "unknown error")[:2000]
    if result.permanent:
        return {"state": OutboxState.dead, "last_error": error, "updated_at": now}
    if row.attempts >= policy.max_attempts:
        return {
            "state": OutboxState.dead,
            "last_error": f"gave up after {row.attempts} attempts: {error}"[:2000],
            "updated_at": now,
        }
    delay = policy.backoff_s(row.attempts, rng, result.retry_after_s)
    return {
        "state": OutboxState.failed,
        "next_attempt_at": now + timedelta(seconds=delay),
        "last_error": error,
        "updated_at": now,
    }


def resend_changes(row: OutboxMessage, now: datetime, token: str) -> dict[str, Any]:
    """An operator sends a dead (or waiting) row again now, with a fresh set of attempts."""
    if row.state not in RESENDABLE_STATES:
        raise ValueError(f"outbox row {row.id} is {row.state}; only dead or failed rows can be resent")
    return {
        "state": OutboxState.pending,
        "attempts": 0,
        "next_attempt_at": now,
        "claim_token": token,  # a new token: a dispatcher that read the old row can no longer claim it
        "updated_at": now,
    }


# --- enqueue and operator actions ----------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _no_line_breaks(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must be a single line")  # it becomes a mail header


def enqueue(
    db: Session,
    *,
    idempotency_key: str,
    channel: OutboxChannel | str,
    recipient: str,
    template: str,
    context: Mapping[str, Any],
    subject: str = "",
    attachments: Iterable[str] = (),
    now: datetime | None = None,
    not_before: datetime | None = None,
) -> OutboxMessage:
    """Add a notification in the caller's transaction (no commit). The same key again returns the row that
    exists and creates nothing. Raises ValueError for a bad channel, recipient, template or context."""
    now = now or utcnow()
    kind = OutboxChannel(channel)
    if not 0 < len(idempotency_key) <= 200:
        raise ValueError("idempotency_key must be 1-200 characters")
    if not 0 < len(recipient) <= 320:
        raise ValueError("recipient must be 1-320 characters")
    if len(subject) > 300:
        raise ValueError("subject must be at most 300 characters")
    _no_line_breaks("recipient", recipient)
    _no_line_breaks("subject", subject)
    check_context(template, context)
    try:
        # Normalised through JSON now, so a Decimal or datetime fails here and not in the dispatcher.
        ctx = json.loads(json.dumps(dict(context), default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"context is not JSON serialisable: {exc}") from None
    paths = [str(p) for p in attachments]
    if any(not p or len(p) > 300 for p in paths):
        raise ValueError("attachment paths must be 1-300 characters")

    existing = db.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing
    if kind == OutboxChannel.email:
        try:
            validate_email(recipient)
        except PydanticCustomError as exc:
            raise ValueError(f"recipient is not an e-mail address: {exc}") from None
    elif kind == OutboxChannel.webpush and db.get(PushSubscription, recipient) is None:
        raise ValueError(f"no push subscription with id {recipient!r}")

    values = {
        "id": new_id(),
        "idempotency_key": idempotency_key,
        "channel": kind,
        "recipient": recipient,
        "subject": subject,
        "template": template,
        "context": ctx,
        "attachments": paths,
        "state": OutboxState.pending,
        "attempts": 0,
        "next_attempt_at": not_before or now,
        "created_at": now,
        "updated_at": now,
    }
    dialect = db.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        # A concurrent enqueue of the same key waits for the other transaction, then inserts nothing.
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        db.exec(insert(OutboxMessage).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"]))
        return db.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == idempotency_key)).one()
    row = OutboxMessage(**values)
    db.add(row)
    db.flush()
    return row


def _token_matches(token: str | None) -> Any:
    return OutboxMessage.claim_token.is_(None) if token is None else OutboxMessage.claim_token == token


def resend(db: Session, message_id: str, *, now: datetime | None = None) -> OutboxMessage:
    """Operator action: a dead or failed row becomes pending again, in the caller's transaction.
    Raises LookupError when there is no such row and ValueError when it cannot be resent now."""
    now = now or utcnow()
    row = db.exec(select(OutboxMessage).where(OutboxMessage.id == message_id).with_for_update()).first()
    if row is None:
        raise LookupError(f"no outbox message {message_id!r}")
    changes = resend_changes(row, now, new_id())
    done = db.exec(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id, _token_matches(row.claim_token))  # type: ignore[arg-type]
        .values(**changes)
    )
    if done.rowcount != 1:
        raise ValueError(f"outbox row {message_id} changed meanwhile; look again")
    db.refresh(row)
    return row


def list_messages(
    db: Session,
    *,
    states: Sequence[OutboxState] | None = None,
    channel: OutboxChannel | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[OutboxMessage]:
    """Newest changes first."""
    stmt = select(OutboxMessage)
    if states:
        stmt = stmt.where(OutboxMessage.state.in_(states))  # type: ignore[attr-defined]
    if channel is not None:
        stmt = stmt.where(OutboxMessage.channel == channel)
    stmt = stmt.order_by(OutboxMessage.updated_at.desc(), OutboxMessage.id).offset(offset).limit(limit)  # type: ignore[attr-defined]
    return list(db.exec(stmt).all())


def list_dead_letters(db: Session, *, limit: int = 100, offset: int = 0) -> list[OutboxMessage]:
    """Rows that will not be sent without an operator's resend, newest first."""
    return list_messages(db, states=[OutboxState.dead], limit=limit, offset=offset)


def count_by_state(db: Session) -> dict[OutboxState, int]:
    """For health pages and metrics: every state, zero included."""
    rows = db.exec(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all()
    counts = dict.fromkeys(OutboxState, 0)
    counts.update({OutboxState(state): n for state, n in rows})
    return counts


def purge_finished(db: Session, before: datetime) -> int:
    """Delete rows sent, or dead (given up), before `before` (caller's transaction; retention calls it with
    `reads_days`). Their keys are forgotten too, so keep rows for longer than anything might enqueue the
    same key again."""
    last = func.coalesce(OutboxMessage.sent_at, OutboxMessage.last_attempt_at, OutboxMessage.created_at)
    done = db.exec(
        delete(OutboxMessage).where(OutboxMessage.state.in_([OutboxState.sent, OutboxState.dead]))  # type: ignore[attr-defined]
        .where(last < before)
    )
    return int(done.rowcount or 0)


# --- dispatcher ----------------------------------------------------------------------------


def _outgoing(row: OutboxMessage, push: PushTarget | None) -> OutgoingMessage:
    return OutgoingMessage(
        id=row.id,
        idempotency_key=row.idempotency_key,
        channel=str(row.channel),
        recipient=row.recipient,
        subject=row.subject,
        template=row.template,
        context=dict(row.context or {}),
        attachments=tuple(row.attachments or ()),
        attempt=row.attempts,
        created_at=row.created_at,
        push=push,
    )


def _claim_one(
    session_factory: Callable[[], Session],
    kinds: list[OutboxChannel],
    now: datetime,
    policy: RetryPolicy,
) -> tuple[str, OutgoingMessage | None, str] | None:
    """Claim the oldest due row: None when nothing is due; (token, message, state) otherwise, where message is
    None when the claim did not lead to a send (the row died, or another dispatcher won it)."""
    with session_factory() as db:
        stmt = (
            select(OutboxMessage)
            .where(
                OutboxMessage.state.in_(DUE_STATES),  # type: ignore[attr-defined]
                OutboxMessage.next_attempt_at <= now,
                OutboxMessage.channel.in_(kinds),  # type: ignore[attr-defined]
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(1)
        )
        if db.get_bind().dialect.name == "postgresql":
            # Concurrent dispatchers each take a different row instead of queueing on the same one.
            stmt = stmt.with_for_update(skip_locked=True)
        row = db.exec(stmt).first()
        if row is None:
            return None
        token = new_id()
        changes = claim_changes(row, now, policy, token)
        # Compare-and-set on the token: on SQLite (no row locks) a second dispatcher may have read the same row.
        done = db.exec(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id, _token_matches(row.claim_token))  # type: ignore[arg-type]
            .values(**changes)
        )
        if done.rowcount != 1:
            db.rollback()
            return token, None, "lost"
        db.commit()
        db.refresh(row)
        if row.state != OutboxState.sending:
            log.warning("outbox %s (%s) is dead: %s", row.id, row.channel, row.last_error)
            return token, None, str(row.state)
        push = None
        if row.channel == OutboxChannel.webpush:
            sub = db.get(PushSubscription, row.recipient)
            if sub is not None and sub.expired_at is None:
                push = PushTarget(endpoint=sub.endpoint, p256dh=sub.p256dh, auth=sub.auth)
        return token, _outgoing(row, push), str(row.state)


def _record(
    session_factory: Callable[[], Session],
    message: OutgoingMessage,
    token: str,
    result: SendResult,
    now: datetime,
    policy: RetryPolicy,
    rng: Rng,
) -> OutboxState | None:
    """Write one attempt's result; None when the claim was no longer ours (the other claimer's result counts)."""
    with session_factory() as db:
        row = db.get(OutboxMessage, message.id)
        if row is None or row.claim_token != token:
            return None
        changes = result_changes(row, result, now, policy, rng)
        done = db.exec(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id, OutboxMessage.claim_token == token)  # type: ignore[arg-type]
            .values(**changes)
        )
        if done.rowcount != 1:
            db.rollback()
            return None
        if result.recipient_gone and row.channel == OutboxChannel.webpush:
            db.exec(
                update(PushSubscription)
                .where(PushSubscription.id == row.recipient, PushSubscription.expired_at.is_(None))  # type: ignore[arg-type, union-attr]
                .values(expired_at=now)
            )
        db.commit()
        return OutboxState(changes["state"])


def dispatch_due(
    session_factory: Callable[[], Session],
    channels: Mapping[OutboxChannel | str, Channel],
    now: datetime | Clock,
    limit: int = 50,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    rng: Rng | None = None,
) -> DispatchStats:
    """Send up to `limit` due rows, one at a time, and record each result.

    `now` is a datetime, or a clock read at every step (so a long batch schedules retries from the real
    time). Rows of a channel missing from `channels` are left alone: they wait until it is configured.
    """
    clock: Clock = now if callable(now) else (lambda: now)  # type: ignore[assignment, return-value]
    rng = rng or random.Random()
    kinds = [OutboxChannel(k) for k in channels]
    by_kind = {OutboxChannel(k): ch for k, ch in channels.items()}
    stats = DispatchStats()
    if not kinds or limit <= 0:
        return stats
    races = 0
    while stats.claimed < limit:
        claimed = _claim_one(session_factory, kinds, clock(), policy)
        if claimed is None:
            break
        token, message, state = claimed
        if message is None:
            if state == "lost":
                races += 1
                if races > limit:  # someone else is draining the queue; let them
                    break
                continue
            stats.claimed += 1
            stats.dead += 1
            continue
        stats.claimed += 1
        try:
            result = by_kind[OutboxChannel(message.channel)].send(message)
        except Exception as exc:  # a channel bug must not stop the batch; the row retries and stays visible
            log.exception("outbox %s: channel %s raised", message.id, message.channel)
            result = SendResult.retry(f"{type(exc).__name__}: {exc}"[:2000])
        outcome = _record(session_factory, message, token, result, clock(), policy, rng)
        if outcome is None:
            stats.lost += 1
            log.warning("outbox %s: claimed again by another dispatcher before its result was recorded", message.id)
        elif outcome == OutboxState.sent:
            stats.sent += 1
        elif outcome == OutboxState.dead:
            stats.dead += 1
            log.warning(
                "outbox %s (%s to %s) is dead: %s", message.id, message.channel, message.recipient, result.error
            )
        else:
            stats.retried += 1
            log.info(
                "outbox %s (%s): attempt %d failed, will retry: %s",
                message.id,
                message.channel,
                message.attempt,
                result.error,
            )
    return stats


async def dispatch_due_async(
    session_factory: Callable[[], Session],
    channels: Mapping[OutboxChannel | str, Channel],
    now: datetime | Clock,
    limit: int = 50,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    rng: Rng | None = None,
) -> DispatchStats:
    """`dispatch_due` in a worker thread: SMTP and HTTP calls block."""
    return await asyncio.to_thread(dispatch_due, session_factory, channels, now, limit, policy=policy, rng=rng)
