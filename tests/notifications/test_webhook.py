"""Webhooks against a real local HTTP server: signature, idempotency header, status mapping, retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from enforcement.channels import OutgoingMessage, WebhookChannel
from enforcement.outbox import RetryPolicy, dispatch_due, enqueue
from models.outbox import OutboxMessage, OutboxState
from tests.conftest import FakeClock
from tests.notifications.servers import HttpReply, HttpRequest, ScriptedHttpServer

Factory = Callable[[], Session]
SECRET = "whsec-0123456789abcdef"
POLICY = RetryPolicy(max_attempts=5, base_delay_s=60, max_delay_s=3600, jitter=0.25, lease_s=60)
BLACKLIST = {
    "plate": "XY999ZZ",
    "bay": "B-01",
    "site": "Depot",
    "seen_at": "2026-11-02 09:00",
    "reason": "stolen",
}


def verify(req: HttpRequest, secret: str = SECRET) -> bool:
    """What a receiver does, written independently of the channel's own signing code."""
    ts = req.headers["X-Baywarden-Timestamp"]
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + req.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(req.headers["X-Baywarden-Signature"], f"sha256={expected}")


def message(**kw: object) -> OutgoingMessage:
    fields: dict[str, object] = {
        "id": "b" * 32,
        "idempotency_key": "blacklist:XY999ZZ:2026-11-02T09:00",
        "channel": "webhook",
        "recipient": "ops",
        "subject": "Blacklisted vehicle XY999ZZ",
        "template": "blacklist_alert",
        "context": BLACKLIST,
    }
    fields.update(kw)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def test_retries_on_503_then_succeeds_with_the_same_signed_body(factory: Factory, clock: FakeClock) -> None:
    replies = [HttpReply(503, {"Retry-After": "120"}, b"maintenance"), HttpReply(200, {"X-Request-Id": "rcv-42"})]
    with ScriptedHttpServer(replies) as server:
        channel = WebhookChannel(server.url(), SECRET, clock=clock, timeout_s=5)
        with factory() as db:
            enqueue(
                db,
                idempotency_key="blacklist:XY999ZZ",
                channel="webhook",
                recipient="ops",
                template="blacklist_alert",
                subject="Blacklisted vehicle XY999ZZ",
                context=BLACKLIST,
                now=clock.now,
            )
            db.commit()
        stats = dispatch_due(factory, {"webhook": channel}, clock, 10, policy=POLICY, rng=random.Random(5))
        assert stats.retried == 1
        with factory() as db:
            r = db.exec(select(OutboxMessage)).one()
            assert r.state == OutboxState.failed and "HTTP 503" in (r.last_error or "")
            # Retry-After (120 s) wins over the first backoff step (45-60 s).
            assert r.next_attempt_at == clock.now + timedelta(seconds=120)
        clock.advance(seconds=119)
        assert dispatch_due(factory, {"webhook": channel}, clock, 10, policy=POLICY).claimed == 0
        clock.advance(seconds=1)
        assert dispatch_due(factory, {"webhook": channel}, clock, 10, policy=POLICY).sent == 1
        with factory() as db:
            r = db.exec(select(OutboxMessage)).one()
            assert (r.state, r.attempts, r.provider_message_id) == (OutboxState.sent, 2, "rcv-42")

    first, second = server.requests
    for req in (first, second):
        assert verify(req)
        assert req.headers["Idempotency-Key"] == "blacklist:XY999ZZ"
        assert req.headers["Content-Type"] == "application/json"
    assert first.body == second.body  # a receiver may compare a duplicate with what it stored
    assert (first.headers["X-Baywarden-Attempt"], second.headers["X-Baywarden-Attempt"]) == ("1", "2")
    assert int(second.headers["X-Baywarden-Timestamp"]) - int(first.headers["X-Baywarden-Timestamp"]) == 120
    payload = json.loads(first.body)
    assert payload["event"] == "blacklist_alert"
    assert payload["data"]["plate"] == "XY999ZZ"
    assert payload["idempotency_key"] == "blacklist:XY999ZZ"
    assert not verify(first, secret="another-secret-of-16+")


@pytest.mark.parametrize(
    ("status", "ok", "permanent", "gone"),
    [
        (200, True, False, False),
        (204, True, False, False),
        (410, False, True, True),
        (400, False, True, False),
        (401, False, False, False),  # the receiver does not know our secret yet: fixable there
        (302, False, True, False),  # a signed POST is not redirected
        (429, False, False, False),
        (500, False, False, False),
        (502, False, False, False),
    ],
)
def test_status_mapping(status: int, ok: bool, permanent: bool, gone: bool) -> None:
    with ScriptedHttpServer([HttpReply(status, {"Location": "http://127.0.0.1:1/x"})]) as server:
        result = WebhookChannel(server.url(), SECRET, timeout_s=5).send(message())
    assert (result.ok, result.permanent, result.recipient_gone) == (ok, permanent, gone)
    assert len(server.requests) == 1


def test_timeout_and_refused_connection_are_retried() -> None:
    with ScriptedHttpServer([HttpReply(200, delay_s=1.0)]) as server:
        result = WebhookChannel(server.url(), SECRET, timeout_s=0.3).send(message())
        assert not result.ok and not result.permanent and "Timeout" in (result.error or "")
        url = server.url()
    result = WebhookChannel(url, SECRET, timeout_s=1).send(message())  # the server is gone now
    assert not result.ok and not result.permanent and "ConnectError" in (result.error or "")


def test_retry_after_as_an_http_date(clock: FakeClock) -> None:
    later = "Mon, 02 Nov 2026 09:05:00 GMT"  # five minutes after the fake clock's start
    with ScriptedHttpServer([HttpReply(503, {"Retry-After": later})]) as server:
        result = WebhookChannel(server.url(), SECRET, clock=clock, timeout_s=5).send(message())
    assert result.retry_after_s == 300


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookChannel("ftp://x", SECRET)
    with pytest.raises(ValueError, match="16"):
        WebhookChannel("https://x.example/hook", "short")
