"""Notification channels behind one protocol: `send(message) -> SendResult`, and the templates they render.

A channel never raises for a delivery problem: it says whether the attempt worked, and if not whether
trying again could help (`permanent`). The outbox dispatcher turns that into retries or a dead letter.
Channels are synchronous (smtplib, requests, httpx); from async code call `send_async`, which runs them
in a thread so a slow mail server never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import mimetypes
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import requests
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from py_vapid import Vapid
from pydantic import SecretStr
from pywebpush import WebPushException, webpush

from models.base import Clock, utcnow
from models.settings import MailSettings

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"

# --- messages and results ------------------------------------------------------------------


@dataclass(frozen=True)
class PushTarget:
    """The parts of a browser's push subscription that a push service needs."""

    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True)
class OutgoingMessage:
    """What a channel sends: an outbox row as plain data, detached from the database session."""

    id: str
    idempotency_key: str
    channel: str
    recipient: str
    subject: str
    template: str
    context: Mapping[str, Any]
    attachments: tuple[str, ...] = ()
    attempt: int = 1
    created_at: datetime | None = None
    push: PushTarget | None = None  # resolved by the dispatcher for web push rows


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False  # True: retrying cannot help (bounce, subscription gone, bad request)
    provider_id: str | None = None
    error: str | None = None
    retry_after_s: float | None = None  # the provider asked for at least this delay (Retry-After)
    recipient_gone: bool = False  # the address no longer exists (Web Push 404/410): expire the subscription

    @classmethod
    def sent(cls, provider_id: str | None = None) -> SendResult:
        return cls(ok=True, provider_id=provider_id)

    @classmethod
    def retry(cls, error: str, retry_after_s: float | None = None) -> SendResult:
        return cls(ok=False, error=error, retry_after_s=retry_after_s)

    @classmethod
    def give_up(cls, error: str, *, recipient_gone: bool = False) -> SendResult:
        return cls(ok=False, permanent=True, error=error, recipient_gone=recipient_gone)


class Channel(Protocol):
    def send(self, message: OutgoingMessage) -> SendResult: ...


async def send_async(channel: Channel, message: OutgoingMessage) -> SendResult:
    """Send from async code (e.g. the "send test e-mail" button) without blocking the event loop."""
    return await asyncio.to_thread(channel.send, message)


# --- templates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSpec:
    required: frozenset[str]
    optional: frozenset[str] = field(default_factory=frozenset)
    urls: frozenset[str] = field(default_factory=frozenset)  # must be http(s): they end up in href attributes


# The operator's details from the site settings, printed at the foot of driver notices when given.
SITE_KEYS = frozenset({"operator_name", "operator_address", "operator_registration", "contact_email", "contact_phone",
                       "lang"})

TEMPLATES: dict[str, TemplateSpec] = {
    "penalty_warning": TemplateSpec(
        required=frozenset(
            {"plate", "bay", "site", "grace_ends_at", "minutes_left", "fee_per_minute", "fee_cap", "currency"}
        ),
        optional=frozenset({"driver_url", "time_left"}) | SITE_KEYS,
        urls=frozenset({"driver_url"}),
    ),
    "penalty_notice": TemplateSpec(
        required=frozenset(
            {"plate", "bay", "site", "amount", "currency", "rule", "started_at", "ended_at", "driver_url"}
        ),
        optional=frozenset({"minutes_billed"}) | SITE_KEYS,
        urls=frozenset({"driver_url"}),
    ),
    "blacklist_alert": TemplateSpec(
        required=frozenset({"plate", "bay", "site", "seen_at"}),
        optional=frozenset({"reason", "camera", "matched_plate", "dashboard_url", "severity", "alert_kind"}),
        urls=frozenset({"dashboard_url"}),
    ),
    "test_email": TemplateSpec(required=frozenset({"site", "requested_by", "sent_at"})),
}


def check_context(template: str, context: Mapping[str, Any]) -> None:
    """Raise ValueError when a template is unknown or its context lacks a key (caught at enqueue, not at send)."""
    spec = TEMPLATES.get(template)
    if spec is None:
        raise ValueError(f"unknown notification template {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    missing = spec.required - context.keys()
    if missing:
        raise ValueError(f"template {template!r} needs context keys: {', '.join(sorted(missing))}")
    for key in spec.urls:
        value = context.get(key)
        if value is not None and not (isinstance(value, str) and value.startswith(("https://", "http://"))):
            raise ValueError(f"template {template!r}: {key} must be an http(s) URL")


class Renderer:
    """Jinja2 over `enforcement/templates`: `<name>.txt`, `<name>.html` (autoescaped) and `<name>.push.txt`;
    with a context key `lang` (a driver notice in the site's language) `<lang>/<name>...` when it exists."""

    def __init__(self, template_dir: Path = TEMPLATE_DIR):
        self.env = Environment(
            loader=FileSystemLoader(str(template_dir)),
            # Only HTML is escaped: plain text and push bodies must show a plate like "A&B" as typed.
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._listed: set[str] | None = None

    def _context(self, template: str, context: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        spec = TEMPLATES.get(template)
        base: dict[str, Any] = dict.fromkeys(spec.optional) if spec else {}
        base.update(context)
        base.update(extra)
        base.setdefault("lang", None)  # the layout asks; operator messages are English
        return base

    def _name(self, name: str, context: Mapping[str, Any]) -> str:
        lang = context.get("lang")
        if lang and lang != "en" and str(lang).isalpha() and f"{lang}/{name}" in self._names():
            return f"{lang}/{name}"
        return name

    def _names(self) -> set[str]:
        if self._listed is None:
            self._listed = set(self.env.list_templates())
        return self._listed

    def text(self, template: str, context: Mapping[str, Any]) -> str:
        name = self._name(f"{template}.txt", context)
        return self.env.get_template(name).render(self._context(template, context, {})).rstrip() + "\n"

    def html(self, template: str, context: Mapping[str, Any], evidence_cids: tuple[str, ...] = ()) -> str:
        extra = {"evidence_cids": evidence_cids}
        return self.env.get_template(self._name(f"{template}.html", context)).render(
            self._context(template, context, extra))

    def push(self, template: str, context: Mapping[str, Any]) -> str:
        """Short body for a push notification; the subject alone when the template has no push variant."""
        name = self._name(f"{template}.push.txt", context)
        if name not in self._names():
            return ""
        return self.env.get_template(name).render(self._context(template, context, {})).strip()


_default_renderer: Renderer | None = None


def default_renderer() -> Renderer:
    global _default_renderer
    if _default_renderer is None:
        _default_renderer = Renderer()
    return _default_renderer


def _topic(idempotency_key: str) -> str:
    """32 base64url characters: a stable Web Push Topic, so a push service replaces an undelivered duplicate."""
    return base64.urlsafe_b64encode(hashlib.sha256(idempotency_key.encode()).digest()[:24]).decode()


def _retry_after_s(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds, from either form it may take (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


# --- e-mail --------------------------------------------------------------------------------


# Codes that mean "this server will not take mail from us as configured" (TLS or login missing or wrong),
# not "this message is bad": retrying after the configuration is fixed will work, so they are not bounces.
_SMTP_CONFIG_CODES = frozenset({530, 534, 535, 538})


class _SmtpRefused(Exception):
    def __init__(self, stage: str, code: int, text: bytes | str):
        self.stage, self.code = stage, code
        self.text = text.decode(errors="replace") if isinstance(text, bytes) else text
        super().__init__(f"{stage} refused: {code} {self.text}")


class SmtpChannel:
    """E-mail through one SMTP server: multipart/alternative text + HTML, evidence images inline (Content-ID).

    One connection per message: volumes are small, and a fresh connection never inherits a broken one.
    """

    def __init__(
        self,
        settings: MailSettings,
        *,
        evidence_dir: Path | None = None,
        renderer: Renderer | None = None,
        clock: Clock = utcnow,
    ):
        self.settings = settings
        self.evidence_dir = evidence_dir
        self.renderer = renderer or default_renderer()
        self.clock = clock
        self.domain = str(settings.from_address).rsplit("@", 1)[1]

    def message_id(self, idempotency_key: str) -> str:
        """Derived from the idempotency key, so every retry of one notification carries the same Message-ID."""
        return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]}@{self.domain}>"

    def _attachment_path(self, name: str) -> Path:
        path = Path(name)
        if not path.is_absolute() and self.evidence_dir is not None:
            path = self.evidence_dir / path
        return path

    def build(self, message: OutgoingMessage) -> EmailMessage:
        """The complete e-mail; raises TemplateError or ValueError (e.g. a line break in a header)."""
        s = self.settings
        mail = EmailMessage()
        mail["From"] = formataddr((s.from_name, str(s.from_address)))
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(self.clock())
        mail["Message-ID"] = self.message_id(message.idempotency_key)
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
        mail["X-Baywarden-Notification"] = message.id

        inline: list[tuple[str, bytes, str, str]] = []
        files: list[tuple[Path, bytes, str, str]] = []
        for i, name in enumerate(message.attachments):
            path = self._attachment_path(name)
            try:
                data = path.read_bytes()
            except OSError as exc:
                # Evidence may have been purged by retention; the notice matters more than the photo.
                log.warning("notification %s: attachment %s not readable (%s), sent without it", message.id, name, exc)
                continue
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            maintype, subtype = ctype.split("/", 1)
            if maintype == "image":
                cid = f"evidence{i}.{message.id}@{self.domain}"
                inline.append((cid, data, subtype, path.name))
            else:
                files.append((path, data, maintype, subtype))

        mail.set_content(self.renderer.text(message.template, message.context))
        html = self.renderer.html(message.template, message.context, tuple(c for c, *_ in inline))
        mail.add_alternative(html, subtype="html")
        if inline:
            html_part = mail.get_payload()[1]  # type: ignore[index]
            for cid, data, subtype, filename in inline:
                html_part.add_related(data, "image", subtype, cid=f"<{cid}>", filename=filename, disposition="inline")
        for path, data, maintype, subtype in files:
            mail.add_attachment(data, maintype, subtype, filename=path.name)
        return mail

    def _tls_context(self) -> ssl.SSLContext:
        s = self.settings
        ctx = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        if not s.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        # An explicit EHLO name: smtplib's default asks DNS for our FQDN, which can hang on a closed network.
        helo = socket.gethostname() or "localhost"
        if s.security == "ssl":
            return smtplib.SMTP_SSL(
                s.host, s.port, local_hostname=helo, timeout=s.timeout_s, context=self._tls_context()
            )
        return smtplib.SMTP(s.host, s.port, local_hostname=helo, timeout=s.timeout_s)

    def deliver(self, data: bytes, recipient: str) -> str:
        """Hand one serialised e-mail to the server; returns the server's final reply (its queue id) or raises."""
        s = self.settings
        with self._connect() as smtp:
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if s.username is not None:
                smtp.login(s.username, s.password.get_secret_value() if s.password else "")
            # Step by step rather than send_message(), to know which step failed and keep the server's reply.
            code, text = smtp.mail(str(s.from_address))
            if code != 250:
                raise _SmtpRefused("MAIL FROM", code, text)
            code, text = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise _SmtpRefused("RCPT TO", code, text)
            try:
                code, text = smtp.data(data)
            except smtplib.SMTPDataError as exc:  # the DATA command itself refused
                raise _SmtpRefused("DATA", exc.smtp_code, exc.smtp_error) from None
            if code != 250:
                raise _SmtpRefused("DATA", code, text)
            return text.decode(errors="replace")

    def send(self, message: OutgoingMessage) -> SendResult:
        try:
            mail = self.build(message)
            # Serialised here, so a header the encoder refuses is a clear permanent error, not a crash in deliver().
            data = mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))
        except (TemplateError, ValueError, TypeError, UnicodeError) as exc:
            return SendResult.give_up(f"cannot build the e-mail: {exc}")
        try:
            reply = self.deliver(data, message.recipient)
        except UnicodeError:  # a non-ASCII address needs SMTPUTF8, which this channel does not speak
            return SendResult.give_up(f"SMTP: non-ASCII address {message.recipient!r} is not supported")
        except _SmtpRefused as exc:
            permanent = 500 <= exc.code < 600 and exc.code not in _SMTP_CONFIG_CODES
            return SendResult(ok=False, permanent=permanent, error=f"SMTP {exc}"[:2000])
        except smtplib.SMTPResponseException as exc:
            # Greeting, EHLO, STARTTLS or AUTH: a server or configuration problem, never this message's fault.
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            return SendResult.retry(f"SMTP {exc.smtp_code} {text}"[:2000])
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, TLS failure
            return SendResult.retry(f"SMTP {type(exc).__name__}: {exc}"[:2000])
        return SendResult.sent(reply[:300] or mail["Message-ID"])


# --- webhook -------------------------------------------------------------------------------


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 over `timestamp + "." + body`; the timestamp stops replays of old bodies."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class WebhookChannel:
    """POST the notification as signed JSON to one URL. 2xx: sent; 5xx, 408, 425, 429 and network errors: retry
    (honouring Retry-After); 401/403: retry too, since a receiver that does not know our secret yet is fixed
    on its side; 410 and other 4xx: permanent. Redirects are not followed: a signed POST stays put."""

    RETRY_STATUSES = frozenset({401, 403, 408, 425, 429})

    def __init__(
        self,
        url: str,
        secret: str | SecretStr,
        *,
        timeout_s: float = 10.0,
        clock: Clock = utcnow,
        client: httpx.Client | None = None,
    ):
        if not url.startswith(("https://", "http://")):
            raise ValueError("webhook url must be http(s)")
        self.url = url
        self._secret = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if len(self._secret) < 16:
            raise ValueError("webhook secret must be at least 16 characters")
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def body(message: OutgoingMessage) -> bytes:
        """The same bytes on every attempt, so a receiver may compare a duplicate with what it stored."""
        payload = {
            "id": message.id,
            "idempotency_key": message.idempotency_key,
            "event": message.template,
            "subject": message.subject,
            "recipient": message.recipient,
            "data": dict(message.context),
            "created_at": message.created_at.isoformat() if message.created_at else None,
        }
        return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()

    def send(self, message: OutgoingMessage) -> SendResult:
        body = self.body(message)
        now = self.clock()
        timestamp = str(int(now.timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Baywarden-Webhook/1",
            "X-Baywarden-Timestamp": timestamp,
            "X-Baywarden-Signature": webhook_signature(self._secret, timestamp, body),
            "Idempotency-Key": message.idempotency_key,
            "X-Baywarden-Attempt": str(message.attempt),
        }
        try:
            resp = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # connect, read timeout, protocol errors
            return SendResult.retry(f"webhook {type(exc).__name__}: {exc}"[:2000])
        status = resp.status_code
        if 200 <= status < 300:
            return SendResult.sent(resp.headers.get("X-Request-Id"))
        error = f"webhook HTTP {status}: {resp.text[:500]}"
        if status >= 500 or status in self.RETRY_STATUSES:
            return SendResult.retry(error, _retry_after_s(resp.headers.get("Retry-After"), now))
        return SendResult.give_up(error, recipient_gone=status == 410)


# --- web push ------------------------------------------------------------------------------


def load_vapid_key(key: str | Path | SecretStr) -> Vapid:
    """A VAPID private key from a PEM/DER file, a PEM string, or a base64url raw/DER string."""
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    if isinstance(key, Path) or (isinstance(key, str) and "\n" not in key and len(key) < 4096 and Path(key).is_file()):
        return Vapid.from_file(str(key))
    if key.lstrip().startswith("-----BEGIN"):
        return Vapid.from_pem(key.encode())
    return Vapid.from_string(key)


class WebPushChannel:
    """Web Push (RFC 8030) with VAPID through pywebpush. 404/410: the subscription is gone (permanent);
    401, 429 and 5xx: retry; other 4xx: permanent. The Topic header lets the push service drop a duplicate."""

    def __init__(
        self,
        vapid_private_key: str | Path | SecretStr,
        vapid_claims_email: str,
        *,
        ttl_s: int = 24 * 3600,
        timeout_s: float = 10.0,
        renderer: Renderer | None = None,
        clock: Clock = utcnow,
        session: requests.Session | None = None,
    ):
        self._vapid = load_vapid_key(vapid_private_key)
        sub = vapid_claims_email
        self._sub = sub if sub.startswith(("mailto:", "https:")) else f"mailto:{sub}"
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.renderer = renderer or default_renderer()
        self.clock = clock
        self._session = session or requests.Session()

    def payload(self, message: OutgoingMessage) -> str:
        body = self.renderer.push(message.template, message.context)
        data = {
            "title": message.subject,
            "body": body,
            "url": message.context.get("driver_url"),
            "tag": message.idempotency_key,
        }
        return json.dumps(data, separators=(",", ":"))

    def send(self, message: OutgoingMessage) -> SendResult:
        if message.push is None:
            return SendResult.give_up("no push subscription for this recipient")
        try:
            data = self.payload(message)
        except TemplateError as exc:
            return SendResult.give_up(f"cannot render the push message: {exc}")
        info = {"endpoint": message.push.endpoint, "keys": {"p256dh": message.push.p256dh, "auth": message.push.auth}}
        try:
            resp = webpush(
                info,
                data=data,
                vapid_private_key=self._vapid,
                # A fresh dict each time: pywebpush writes "aud" and "exp" into the claims it is given.
                vapid_claims={"sub": self._sub},
                timeout=self.timeout_s,
                ttl=self.ttl_s,
                headers={"Topic": _topic(message.idempotency_key), "Urgency": "high"},
                requests_session=self._session,
            )
        except WebPushException as exc:
            status = exc.status_code
            if status is None:  # raised before any request: malformed subscription keys
                return SendResult.give_up(f"web push: {exc.message}"[:2000])
            error = f"web push HTTP {status}: {exc.message}"[:2000]
            if status in (404, 410):
                return SendResult.give_up(error, recipient_gone=True)
            # 401: our VAPID token was refused (key or clock), fixable here; 403 means the subscription was made
            # for another VAPID key, which no retry changes.
            if status in (401, 429) or status >= 500:
                return SendResult.retry(error, _retry_after_s(exc.retry_after, self.clock()))
            return SendResult.give_up(error)
        except requests.RequestException as exc:
            return SendResult.retry(f"web push {type(exc).__name__}: {exc}"[:2000])
        except ValueError as exc:  # undecodable p256dh/auth values in the subscription
            return SendResult.give_up(f"web push: bad subscription: {exc}"[:2000])
        location = resp.headers.get("Location") if isinstance(resp, requests.Response) else None
        return SendResult.sent(location[:300] if location else None)


# --- operator alerts -----------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorAlert:
    kind: str
    severity: str
    title: str
    detail: str
    subject: str
    idempotency_key: str  # the recorder should ignore a second alert with the same key (at-least-once delivery)


class OperatorChannel:
    """Records an operator alert through `record` (wired to the alerts table), so alerts share the outbox's
    retries and dead letters. `record` returns the alert's id, or raises to have the attempt retried."""

    def __init__(self, record: Callable[[OperatorAlert], str | int | None], *, renderer: Renderer | None = None):
        self.record = record
        self.renderer = renderer or default_renderer()

    def alert(self, message: OutgoingMessage) -> OperatorAlert:
        ctx = message.context
        return OperatorAlert(
            kind=str(ctx.get("alert_kind") or message.template.removesuffix("_alert"))[:40],
            severity=str(ctx.get("severity") or "warning")[:16],
            title=(message.subject or message.template)[:200],
            detail=self.renderer.text(message.template, ctx).strip()[:2000],
            subject=str(ctx.get("plate") or message.recipient)[:128],
            idempotency_key=message.idempotency_key,
        )

    def send(self, message: OutgoingMessage) -> SendResult:
        try:
            alert = self.alert(message)
        except TemplateError as exc:
            return SendResult.give_up(f"cannot render the alert: {exc}")
        try:
            alert_id = self.record(alert)
        except Exception as exc:  # the recorder's own database trouble: try again later
            return SendResult.retry(f"operator alert: {type(exc).__name__}: {exc}"[:2000])
        return SendResult.sent(None if alert_id is None else str(alert_id))
