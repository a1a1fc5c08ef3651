"""Shared test data: a penalty notice context and small fake channels for the dispatcher's own logic."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from enforcement.channels import OutgoingMessage, SendResult
from enforcement.outbox import enqueue
from models.outbox import OutboxMessage


def notice_context(**over: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "plate": "AB123CD",
        "bay": "B-04",
        "site": "Tom & Jerry's <Garage>",
        "amount": Decimal("12.50"),
        "currency": "EUR",
        "rule": "0.50 EUR per minute after 15 minutes of grace, at most 30.00 EUR",
        "started_at": "2026-11-02 09:15",
        "ended_at": "2026-11-02 09:40",
        "minutes_billed": 25,
        "driver_url": "https://baywarden.example/d/abc123",
    }
    ctx.update(over)
    return ctx


def enqueue_notice(
    db: Session, key: str, recipient: str = "driver@baywarden.example", channel: str = "email", **kw: Any
) -> OutboxMessage:
    return enqueue(
        db,
        idempotency_key=key,
        channel=channel,
        recipient=recipient,
        template="penalty_notice",
        subject=f"Idle fee for AB123CD ({key})",
        context=notice_context(),
        **kw,
    )


class RecordingChannel:
    """Thread-safe: remembers every idempotency key it was asked to send and answers with `answer`."""

    def __init__(self, answer: Callable[[OutgoingMessage], SendResult] | None = None):
        self.sent: list[str] = []
        self.answer = answer or (lambda m: SendResult.sent(f"p-{m.idempotency_key}"))
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> SendResult:
        with self._lock:
            self.sent.append(message.idempotency_key)
        return self.answer(message)


class Crash(BaseException):
    """Escapes `except Exception` like a killed process would: the dispatcher records nothing."""


class CrashingChannel:
    def send(self, message: OutgoingMessage) -> SendResult:
        raise Crash()
