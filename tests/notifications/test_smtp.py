"""E-mail through a real SMTP server (aiosmtpd on 127.0.0.1): content, outages, bounces, STARTTLS, SSL, AUTH."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlmodel import Session, select

from enforcement.channels import MailSettings, OutgoingMessage, SmtpChannel, send_async
from enforcement.outbox import RetryPolicy, dispatch_due, list_dead_letters
from models.outbox import OutboxMessage, OutboxState
from tests.conftest import FakeClock
from tests.notifications.conftest import TlsFiles
from tests.notifications.helpers import enqueue_notice, notice_context
from tests.notifications.servers import SmtpServer, password_authenticator, server_tls_context

Factory = Callable[[], Session]
POLICY = RetryPolicy(max_attempts=5, base_delay_s=60, max_delay_s=3600, jitter=0.25, lease_s=60)


def mail_settings(port: int, **kw: object) -> MailSettings:
    fields: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": "noreply@baywarden.example",
        "from_name": "Baywarden",
        "timeout_s": 5,
    }
    fields.update(kw)
    return MailSettings(**fields)  # type: ignore[arg-type]


def outgoing(recipient: str = "driver@baywarden.example", key: str = "visit-9:notice", **kw: object) -> OutgoingMessage:
    fields: dict[str, object] = {
        "id": "a" * 32,
        "idempotency_key": key,
        "channel": "email",
        "recipient": recipient,
        "subject": "Idle fee for AB123CD",
        "template": "penalty_notice",
        "context": notice_context(amount="12.50"),
    }
    fields.update(kw)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def rows(factory: Factory) -> list[OutboxMessage]:
    with factory() as db:
        return list(db.exec(select(OutboxMessage).order_by(OutboxMessage.idempotency_key)).all())


def test_notice_is_text_and_html_with_the_evidence_inline(smtp_server: SmtpServer, evidence_dir: Path) -> None:
    channel = SmtpChannel(mail_settings(smtp_server.port), evidence_dir=evidence_dir)
    msg = outgoing(attachments=("cam1/2026-11-02/r1-crop.jpg", "cam1/2026-11-02/purged-crop.jpg"))
    result = channel.send(msg)
    assert result.ok, result.error
    assert result.provider_id == "2.0.0 Ok: queued as Q0001"
    (got,) = smtp_server.messages
    assert got.mail_from == "noreply@baywarden.example"
    assert got.rcpt_tos == ["driver@baywarden.example"]
    mail = got.message
    assert mail["Message-ID"] == channel.message_id("visit-9:notice")
    assert mail["Message-ID"].endswith("@baywarden.example>")
    assert mail["From"] == "Baywarden <noreply@baywarden.example>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "multipart/alternative"
    text_part, related = mail.get_payload()  # type: ignore[misc]
    assert text_part.get_content_type() == "text/plain"
    text = text_part.get_content()
    assert "12.50 EUR" in text and "Tom & Jerry's <Garage>" in text  # plain text shows it as typed
    assert "https://baywarden.example/d/abc123" in text
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    html = html_part.get_content()
    assert "Tom &amp; Jerry&#39;s &lt;Garage&gt;" in html and "<Garage>" not in html
    assert image.get_content_type() == "image/jpeg"
    assert image.get_content() == (evidence_dir / "cam1/2026-11-02/r1-crop.jpg").read_bytes()
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html
    # The missing (purged) file is left out rather than failing the notice.
    assert len(related.get_payload()) == 2


def test_the_same_key_gives_the_same_message_id() -> None:
    a = SmtpChannel(mail_settings(25))
    assert a.message_id("k1") == a.message_id("k1") != a.message_id("k2")


def test_outage_then_recovery_delivers_each_notice_exactly_once(
    factory: Factory, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    channel = SmtpChannel(mail_settings(smtp_server.port, timeout_s=2), clock=clock)
    keys = [f"visit-{i}:notice" for i in range(5)]
    with factory() as db:
        for i, key in enumerate(keys):
            enqueue_notice(db, key, recipient=f"driver{i}@baywarden.example", now=clock.now)
        db.commit()

    smtp_server.stop()
    stats = dispatch_due(factory, {"email": channel}, clock, 50, policy=POLICY, rng=random.Random(3))
    assert (stats.claimed, stats.sent, stats.retried, stats.dead) == (5, 0, 5, 0)
    for r in rows(factory):
        assert r.state == OutboxState.failed and r.sent_at is None
        assert "ConnectionRefused" in (r.last_error or "")
        assert clock.now + timedelta(seconds=45) <= r.next_attempt_at <= clock.now + timedelta(seconds=60)
    assert dispatch_due(factory, {"email": channel}, clock, 50, policy=POLICY).claimed == 0  # backoff holds

    smtp_server.start()  # same port, same handler
    assert smtp_server.messages == []
    clock.advance(minutes=2)
    stats = dispatch_due(factory, {"email": channel}, clock, 50, policy=POLICY)
    assert (stats.sent, stats.retried) == (5, 0)
    assert dispatch_due(factory, {"email": channel}, clock.advance(hours=1), 50, policy=POLICY).claimed == 0

    assert len(smtp_server.messages) == 5
    ids = [m.message["Message-ID"] for m in smtp_server.messages]
    assert sorted(ids) == sorted(channel.message_id(k) for k in keys)  # each notice once, none twice
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == [
        f"driver{i}@baywarden.example" for i in range(5)
    ]
    for r in rows(factory):
        assert (r.state, r.attempts, r.sent_at) == (OutboxState.sent, 2, clock.now - timedelta(hours=1))
        assert (r.provider_message_id or "").startswith("2.0.0 Ok: queued as Q")


def test_a_bounce_is_a_dead_letter_and_the_others_go_out(
    factory: Factory, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    channel = SmtpChannel(mail_settings(smtp_server.port), clock=clock)
    with factory() as db:
        enqueue_notice(db, "n1", recipient="alice@baywarden.example", now=clock.now)
        enqueue_notice(db, "n2", recipient="bounce@baywarden.example", now=clock.now)
        enqueue_notice(db, "n3", recipient="spam@baywarden.example", now=clock.now)
        enqueue_notice(db, "n4", recipient="grey@baywarden.example", now=clock.now)
        enqueue_notice(db, "n5", recipient="bob@baywarden.example", now=clock.now)
        db.commit()
    stats = dispatch_due(factory, {"email": channel}, clock, 50, policy=POLICY)
    assert (stats.sent, stats.dead, stats.retried) == (2, 2, 1)
    state = {r.idempotency_key: r for r in rows(factory)}
    assert state["n1"].state == state["n5"].state == OutboxState.sent
    assert state["n2"].state == OutboxState.dead
    assert "RCPT TO refused: 550" in (state["n2"].last_error or "")
    assert state["n3"].state == OutboxState.dead
    assert "DATA refused: 554" in (state["n3"].last_error or "")
    assert state["n4"].state == OutboxState.failed  # 450 greylisting is temporary
    with factory() as db:
        assert {d.idempotency_key for d in list_dead_letters(db)} == {"n2", "n3"}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["alice@baywarden.example", "bob@baywarden.example"]


def test_starttls_required_refuses_plain_and_accepts_tls(tls_files: TlsFiles) -> None:
    server = SmtpServer(tls_context=server_tls_context(tls_files.cert, tls_files.key), require_starttls=True).start()
    try:
        plain = SmtpChannel(mail_settings(server.port, security="none")).send(outgoing())
        assert not plain.ok and not plain.permanent  # a configuration problem, not a bounce: keep retrying
        assert "530" in (plain.error or "")
        unverified = SmtpChannel(mail_settings(server.port, security="starttls")).send(outgoing())
        assert not unverified.ok and not unverified.permanent
        assert "CERTIFICATE_VERIFY_FAILED" in (unverified.error or "")
        assert server.messages == []

        tls = SmtpChannel(mail_settings(server.port, security="starttls", ca_file=tls_files.cert)).send(outgoing())
        assert tls.ok, tls.error
        insecure = SmtpChannel(mail_settings(server.port, security="starttls", verify_tls=False)).send(outgoing())
        assert insecure.ok, insecure.error
        assert len(server.messages) == 2
    finally:
        server.stop()


def test_starttls_with_login(tls_files: TlsFiles) -> None:
    server = SmtpServer(
        tls_context=server_tls_context(tls_files.cert, tls_files.key),
        require_starttls=True,
        authenticator=password_authenticator("bay", "s3cret-pass"),
        auth_required=True,
    ).start()
    try:
        common = {"security": "starttls", "ca_file": tls_files.cert, "username": "bay"}
        ok = SmtpChannel(mail_settings(server.port, password="s3cret-pass", **common)).send(outgoing())
        assert ok.ok, ok.error
        wrong = SmtpChannel(mail_settings(server.port, password="wrong", **common)).send(outgoing())
        assert not wrong.ok and not wrong.permanent and "535" in (wrong.error or "")
        assert len(server.messages) == 1
    finally:
        server.stop()


def test_implicit_tls(tls_files: TlsFiles) -> None:
    server = SmtpServer(ssl_context=server_tls_context(tls_files.cert, tls_files.key)).start()
    try:
        result = SmtpChannel(mail_settings(server.port, security="ssl", ca_file=tls_files.cert)).send(outgoing())
        assert result.ok, result.error
        assert len(server.messages) == 1
    finally:
        server.stop()


def test_send_from_async_code_runs_in_a_thread(smtp_server: SmtpServer) -> None:
    channel = SmtpChannel(mail_settings(smtp_server.port))
    msg = outgoing(
        template="test_email", context={"site": "Depot", "requested_by": "admin", "sent_at": "09:00"}, key="test-1"
    )

    async def main() -> bool:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        result = await send_async(channel, msg)
        t.cancel()
        return result.ok and ticks > 1  # the loop kept running while the mail was sent

    assert asyncio.run(main())
    assert "test e-mail from Depot" in smtp_server.messages[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_a_header_injection_attempt_is_permanent_not_sent(smtp_server: SmtpServer) -> None:
    result = SmtpChannel(mail_settings(smtp_server.port)).send(outgoing(subject="hi\nBcc: all@example.com"))
    assert not result.ok and result.permanent
    assert smtp_server.messages == []


def test_a_non_ascii_address_is_permanent_not_a_crash(smtp_server: SmtpServer) -> None:
    result = SmtpChannel(mail_settings(smtp_server.port)).send(outgoing(recipient="jürgen@bäckerei.example"))
    assert not result.ok and result.permanent and "non-ASCII" in (result.error or "")


def test_mail_settings_are_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        mail_settings(25, hostname="x")
    with pytest.raises(ValidationError, match="in clear"):
        mail_settings(25, security="none", username="u", password="p")
    with pytest.raises(ValidationError, match="without username"):
        mail_settings(25, security="starttls", password="p")
    with pytest.raises(ValidationError):
        mail_settings(70000)
    assert mail_settings(465, security="ssl").password is None
