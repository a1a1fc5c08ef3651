"""Web Push through pywebpush against a real local HTTP push endpoint.

pywebpush posts with `requests` to whatever endpoint the subscription names, so a plain
http://127.0.0.1 endpoint works: the test server decrypts the aes128gcm payload with the browser's
keys and checks the VAPID JWT signature, exactly as a push service and a browser would.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import http_ece
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid
from sqlmodel import Session, select

from enforcement.channels import OutgoingMessage, PushTarget, WebPushChannel, load_vapid_key
from enforcement.outbox import dispatch_due
from models.outbox import OutboxMessage, OutboxState, PushSubscription
from tests.conftest import FakeClock
from tests.notifications.helpers import enqueue_notice, notice_context
from tests.notifications.servers import HttpReply, HttpRequest, ScriptedHttpServer

Factory = Callable[[], Session]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Browser:
    """The receiving side of a subscription: its ECDH key pair and auth secret."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.p256dh = b64u(point)

    def target(self, endpoint: str) -> PushTarget:
        return PushTarget(endpoint=endpoint, p256dh=self.p256dh, auth=b64u(self.auth))

    def decrypt(self, body: bytes) -> dict[str, object]:
        return json.loads(http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"))


@pytest.fixture(scope="module")
def vapid_pem() -> str:
    v = Vapid()
    v.generate_keys()
    return v.private_pem().decode()


def vapid_claims(req: HttpRequest) -> dict[str, object]:
    """Check the VAPID header's ES256 signature with the key it names, then return the JWT claims."""
    scheme, params = req.headers["Authorization"].split(" ", 1)
    assert scheme == "vapid"
    parts = dict(p.split("=", 1) for p in params.split(","))
    header_b64, claims_b64, sig_b64 = parts["t"].split(".")
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(parts["k"]))
    sig = unb64u(sig_b64)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:  # pragma: no cover - the assertion message is the point
        raise AssertionError("VAPID signature does not verify") from None
    return json.loads(unb64u(claims_b64))


def notice(target: PushTarget | None, key: str = "visit-3:notice") -> OutgoingMessage:
    return OutgoingMessage(
        id="c" * 32,
        idempotency_key=key,
        channel="webpush",
        recipient="sub-1",
        subject="Idle fee for AB123CD",
        template="penalty_notice",
        context=notice_context(amount="12.50"),
        push=target,
    )


def test_push_is_encrypted_for_the_browser_and_signed_with_vapid(vapid_pem: str) -> None:
    browser = Browser()
    with ScriptedHttpServer([HttpReply(201, {"Location": "https://push.example/m/77"})]) as server:
        channel = WebPushChannel(vapid_pem, "ops@baywarden.example", ttl_s=3600, timeout_s=5)
        result = channel.send(notice(browser.target(server.url("/push/abc"))))
        assert result.ok, result.error
        assert result.provider_id == "https://push.example/m/77"
        assert channel.send(notice(browser.target(server.url("/push/abc")))).ok  # a retry of the same notice
    req, again = server.requests
    assert req.path == "/push/abc"
    assert req.headers["Content-Encoding"] == "aes128gcm"
    assert req.headers["TTL"] == "3600"
    assert req.headers["Urgency"] == "high"
    assert len(req.headers["Topic"]) == 32
    assert browser.decrypt(req.body) == {
        "title": "Idle fee for AB123CD",
        "body": "Idle fee 12.50 EUR charged for AB123CD (bay B-04).",
        "url": "https://baywarden.example/d/abc123",
        "tag": "visit-3:notice",
    }
    claims = vapid_claims(req)
    assert claims["aud"] == f"http://127.0.0.1:{server.port}"
    assert claims["sub"] == "mailto:ops@baywarden.example"
    # The same notification always carries the same Topic, so a push service can replace a duplicate.
    assert again.headers["Topic"] == req.headers["Topic"]


@pytest.mark.parametrize(
    ("reply", "ok", "permanent", "gone", "retry_after"),
    [
        (HttpReply(404), False, True, True, None),
        (HttpReply(410), False, True, True, None),
        (HttpReply(413), False, True, False, None),
        (HttpReply(401), False, False, False, None),
        (HttpReply(403), False, True, False, None),
        (HttpReply(429, {"Retry-After": "30"}), False, False, False, 30),
        (HttpReply(503), False, False, False, None),
    ],
)
def test_status_mapping(
    vapid_pem: str, reply: HttpReply, ok: bool, permanent: bool, gone: bool, retry_after: float | None
) -> None:
    with ScriptedHttpServer([reply]) as server:
        result = WebPushChannel(vapid_pem, "ops@baywarden.example").send(notice(Browser().target(server.url())))
    assert (result.ok, result.permanent, result.recipient_gone, result.retry_after_s) == (
        ok,
        permanent,
        gone,
        retry_after,
    )
    assert f"HTTP {reply.status}" in (result.error or "")


def test_unreachable_push_service_is_retried(vapid_pem: str) -> None:
    with ScriptedHttpServer() as server:
        url = server.url()
    result = WebPushChannel(vapid_pem, "ops@baywarden.example", timeout_s=2).send(notice(Browser().target(url)))
    assert not result.ok and not result.permanent and "ConnectionError" in (result.error or "")


def test_malformed_subscription_is_permanent(vapid_pem: str) -> None:
    channel = WebPushChannel(vapid_pem, "ops@baywarden.example")
    bad = PushTarget(endpoint="http://127.0.0.1:9/x", p256dh="not-a-key", auth=b64u(os.urandom(16)))
    result = channel.send(notice(bad))
    assert not result.ok and result.permanent
    assert channel.send(notice(None)).permanent


def test_gone_subscription_through_the_outbox(vapid_pem: str, factory: Factory, clock: FakeClock) -> None:
    browser = Browser()
    with ScriptedHttpServer([HttpReply(410, body=b"push subscription has unsubscribed or expired")]) as server:
        with factory() as db:
            t = browser.target(server.url("/push/gone"))
            sub = PushSubscription(endpoint=t.endpoint, p256dh=t.p256dh, auth=t.auth, owner="visit-3")
            db.add(sub)
            db.flush()
            sub_id = sub.id
            enqueue_notice(db, "visit-3:notice", recipient=sub_id, channel="webpush", now=clock.now)
            db.commit()
        channel = WebPushChannel(vapid_pem, "ops@baywarden.example", timeout_s=5)
        stats = dispatch_due(factory, {"webpush": channel}, clock, 10)
        assert (stats.claimed, stats.dead) == (1, 1)
        assert len(server.requests) == 1
        with factory() as db:
            row = db.exec(select(OutboxMessage)).one()
            assert row.state == OutboxState.dead and "HTTP 410" in (row.last_error or "")
            assert db.get(PushSubscription, sub_id).expired_at == clock.now  # type: ignore[union-attr]
            enqueue_notice(db, "visit-3:reminder", recipient=sub_id, channel="webpush", now=clock.now)
            db.commit()
        assert dispatch_due(factory, {"webpush": channel}, clock, 10).dead == 1
        assert len(server.requests) == 1  # nothing more was sent to a subscription known to be gone


def test_vapid_key_forms(vapid_pem: str, tmp_path: Path) -> None:
    v = Vapid.from_pem(vapid_pem.encode())
    raw = b64u(v.private_key.private_numbers().private_value.to_bytes(32, "big"))
    pem_file = tmp_path / "vapid.pem"
    pem_file.write_text(vapid_pem)
    numbers = {
        load_vapid_key(k).private_key.private_numbers().private_value for k in (vapid_pem, raw, pem_file, str(pem_file))
    }
    assert numbers == {v.private_key.private_numbers().private_value}
