"""SQLModel tables of the notification outbox and the Web Push subscriptions it sends to.

A row is written in the same transaction as the decision that caused it (a penalty, a blacklist hit),
so a notification is never lost when that transaction commits and never sent when it rolls back.
The dispatcher in `enforcement/outbox.py` is the only writer after that.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel

from models.base import UTCDateTime, new_id, utcnow


class OutboxChannel(StrEnum):
    email = "email"
    webpush = "webpush"
    webhook = "webhook"
    operator = "operator"


class OutboxState(StrEnum):
    pending = "pending"  # waiting for its first attempt (or resent by an operator)
    sending = "sending"  # claimed by a dispatcher until next_attempt_at (the lease)
    sent = "sent"
    failed = "failed"  # a retryable failure; due again at next_attempt_at
    dead = "dead"  # permanent error or out of attempts; only an operator's resend revives it


class OutboxMessage(SQLModel, table=True):
    """One notification to send, at least once, to one recipient over one channel."""

    __tablename__ = "outbox"
    # The dispatcher's only query: due rows of some states, oldest first.
    __table_args__ = (Index("ix_outbox_due", "state", "next_attempt_at"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    idempotency_key: str = Field(max_length=200, unique=True)
    # Checked strings, not native enums, so a new channel or state needs no type migration.
    channel: OutboxChannel = Field(sa_type=SAEnum(OutboxChannel, native_enum=False, length=16, name="outbox_channel"))
    recipient: str = Field(max_length=320)  # e-mail address, push subscription id, webhook or operator label
    subject: str = Field(default="", max_length=300)
    template: str = Field(max_length=64)
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attachments: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # evidence paths
    state: OutboxState = Field(
        default=OutboxState.pending,
        sa_type=SAEnum(OutboxState, native_enum=False, length=16, name="outbox_state"),
    )
    attempts: int = 0  # claims so far, counted when claimed so a row that crashes its dispatcher still dies
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Set anew by every claim and resend; a dispatcher writes its result only while the token is still its own.
    claim_token: str | None = Field(default=None, max_length=32)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    provider_message_id: str | None = Field(default=None, max_length=300)


class OutboxMessagePublic(SQLModel):
    id: str
    idempotency_key: str
    channel: OutboxChannel
    recipient: str
    subject: str
    template: str
    state: OutboxState
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    provider_message_id: str | None


class PushSubscription(SQLModel, table=True):
    """A browser's Web Push subscription (from the driver page); expired when the push service says gone."""

    __tablename__ = "push_subscriptions"
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    endpoint: str = Field(max_length=1000, unique=True)
    p256dh: str = Field(max_length=200)  # the browser's public key, base64url
    auth: str = Field(max_length=64)  # the browser's auth secret, base64url
    owner: str = Field(default="", max_length=128, index=True)  # what it was subscribed for: a visit id or plate
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
