"""Turning enforcement outcomes into outbox messages, and sending the outbox on a schedule.

The enforcement service calls `Notifier` inside its transaction, so a notice is enqueued exactly
when its penalty is stored (and never twice: idempotency keys derive from the penalty or visit).
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlmodel import Session, select

from enforcement.config import site_rules
from enforcement.outbox import enqueue
from enforcement.wording import RULE_TEXTS, SUBJECTS, local_time, texts, time_left, zone
from models.outbox import PushSubscription
from models.settings import MailSettings
from models.tables import Role, User, Vehicle
from service import runtime_settings
from service.context import AppContext

log = logging.getLogger(__name__)


def driver_serializer(ctx: AppContext) -> URLSafeTimedSerializer:
    clock = ctx.clock

    class _Signer(TimestampSigner):
        # Link age follows the service clock (injected), not the machine's, so tests control it.
        def get_timestamp(self) -> int:
            return int(clock().timestamp())

    return URLSafeTimedSerializer(ctx.settings.security.secret_key.get_secret_value(), salt="driver-notice",
                                  signer=_Signer)


def driver_url(ctx: AppContext, violation_id: str) -> str:
    token = driver_serializer(ctx).dumps(violation_id)
    return f"{ctx.settings.notifications.public_url.rstrip('/')}/notice/{token}"


def read_driver_token(ctx: AppContext, token: str) -> str | None:
    """The violation id a driver link names, or None when it is forged or expired."""
    max_age = ctx.settings.notifications.driver_link_days * 86400
    try:
        return driver_serializer(ctx).loads(token, max_age=max_age)
    except (BadSignature, SignatureExpired):
        return None


def _money(v: Any) -> str:
    return f"{Decimal(str(v)):.2f}"


class Notifier:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def __call__(self, db: Session, kind: str, payload: dict[str, Any]) -> None:
        try:
            getattr(self, f"_{kind}")(db, payload)
        except ValueError:
            # A message that can never be built (bad address...) must not roll back the penalty.
            log.exception("could not enqueue %s notification", kind)

    def _driver_targets(self, db: Session, plate: str | None) -> tuple[str | None, list[PushSubscription]]:
        if not plate:
            return None, []
        vehicle = db.get(Vehicle, plate)
        subs = list(db.exec(select(PushSubscription).where(PushSubscription.owner == plate)
                            .where(PushSubscription.expired_at == None)))  # noqa: E711
        return (vehicle.email if vehicle else None), subs

    def _send_driver(self, db: Session, key: str, plate: str | None, template: str, subject: str,
                     context: dict[str, Any], attachments: list[str]) -> None:
        email, subs = self._driver_targets(db, plate)
        now = self.ctx.clock()
        if email and runtime_settings.effective_mail(self.ctx, db) is not None:
            enqueue(db, idempotency_key=f"{key}:email", channel="email", recipient=email, template=template,
                    context=context, subject=subject, attachments=attachments, now=now)
        if self.ctx.settings.notifications.vapid_private_key is not None:
            for sub in subs:
                enqueue(db, idempotency_key=f"{key}:push:{sub.id}", channel="webpush", recipient=sub.id,
                        template=template, context=context, subject=subject, now=now)
        if self.ctx.settings.notifications.webhook_url:
            enqueue(db, idempotency_key=f"{key}:webhook", channel="webhook", recipient="operator-backend",
                    template=template, context=context, subject=subject, now=now)

    def _evidence(self, db: Session, visit_id: str) -> list[str]:
        from models.tables import VisitRow

        visit = db.get(VisitRow, visit_id)
        if visit is None:
            return []
        from models.tables import Presence

        presence = db.get(Presence, visit.data.get("presence_id", ""))
        if presence is None:
            return []
        # The plate crop; an outside source that sent only a scene picture has that one.
        best = presence.crop_path or presence.frame_path
        return [best] if best else []

    def _penalty_warning(self, db: Session, p: dict[str, Any]) -> None:
        starts = datetime.fromisoformat(p["fee_starts_at"])
        site = runtime_settings.effective_site(self.ctx, db)  # read now: an edit on the settings page applies
        tz = zone(site_rules(db, self.ctx.settings.enforcement).schedule.timezone)
        lang = site.language
        context = {
            "plate": p.get("plate") or "", "bay": p["bay_id"], "site": site.name,
            **runtime_settings.site_context(site),
            # The grace ends the very second the fee starts: both are printed to the second.
            "grace_ends_at": local_time(starts, tz, lang=lang),
            "minutes_left": max(0, int((starts - self.ctx.clock()).total_seconds() // 60)),
            "time_left": time_left(starts, self.ctx.clock(), lang),
            "fee_per_minute": _money(p["fee_per_min"]),
            # the cap of the visit's own rule snapshot; none: uncapped (the text then names no cap)
            "fee_cap": _money(p["fee_cap"]) if p.get("fee_cap") is not None else "",
            "currency": p["currency"],
        }
        subject = texts(SUBJECTS, lang)["penalty_warning"].format(bay=p["bay_id"], plate=p.get("plate"), site=site.name)
        self._send_driver(db, f"{p['visit_id']}:warning:{starts.isoformat()}", p.get("plate"), "penalty_warning",
                          subject, context, [])

    def _penalty_notice(self, db: Session, p: dict[str, Any]) -> None:
        site = runtime_settings.effective_site(self.ctx, db)
        tz = zone(site_rules(db, self.ctx.settings.enforcement).schedule.timezone)
        lang = site.language
        context = {
            "plate": p.get("plate") or "", "bay": p["bay_id"], "site": site.name, **runtime_settings.site_context(site),
            "amount": _money(p["amount"]), "currency": p["currency"],
            "rule": texts(RULE_TEXTS, lang).get(p["kind"], p["kind"]),
            "started_at": local_time(p["started_at"], tz, lang=lang),
            "ended_at": local_time(p.get("ended_at"), tz, lang=lang),
            "driver_url": driver_url(self.ctx, p["violation_id"]),
        }
        if p.get("minutes") is not None:
            context["minutes_billed"] = p["minutes"]
        subject = texts(SUBJECTS, lang)["penalty_notice"].format(bay=p["bay_id"], plate=p.get("plate"), site=site.name)
        self._send_driver(db, f"{p['violation_id']}:notice", p.get("plate"), "penalty_notice", subject, context,
                          self._evidence(db, p["visit_id"]))

    def _operator_alert(self, db: Session, p: dict[str, Any]) -> None:
        if p.get("kind") != "blacklist":
            return  # other alerts show on the dashboard; only blacklisted vehicles page people by e-mail
        if (not self.ctx.settings.notifications.operator_alert_emails
                or runtime_settings.effective_mail(self.ctx, db) is None):
            return
        context = {"plate": p.get("plate") or "?", "bay": p.get("bay_id") or "?",
                   "site": runtime_settings.site_name(self.ctx, db),
                   "seen_at": p["at"], "reason": p.get("detail", ""), "alert_kind": p["kind"],
                   "dashboard_url": self.ctx.settings.notifications.public_url}
        users = db.exec(select(User).where(User.is_active == True).where(User.email != None)  # noqa: E711, E712
                        .where(User.role.in_((Role.admin, Role.operator))))  # type: ignore[attr-defined]
        for user in users:
            enqueue(db, idempotency_key=f"alert:{p.get('visit_id') or p.get('bay_id')}:{p['kind']}:{p['at']}:{user.id}",
                    channel="email", recipient=str(user.email), template="blacklist_alert", context=context,
                    subject=f"Blacklisted vehicle {p.get('plate')} at bay {p.get('bay_id')}", now=self.ctx.clock())


def build_channels(ctx: AppContext, mail: MailSettings | None = None) -> dict[str, Any]:
    """The channels to send through; e-mail only when a mail server (`mail`) is given."""
    from enforcement.channels import SmtpChannel, WebhookChannel, WebPushChannel

    s, n = ctx.settings, ctx.settings.notifications
    channels: dict[str, Any] = {}
    if mail is not None:
        channels["email"] = SmtpChannel(mail, evidence_dir=s.evidence_dir, clock=ctx.clock)
    if n.webhook_url and n.webhook_secret is not None:
        channels["webhook"] = WebhookChannel(n.webhook_url, n.webhook_secret.get_secret_value(), clock=ctx.clock)
    if n.vapid_private_key is not None:
        channels["webpush"] = WebPushChannel(n.vapid_private_key.get_secret_value(), n.vapid_email)
    return channels


class OutboxDispatcher:
    """Scheduler job: send what is due. Rows of channels not configured wait until they are.

    The mail server is looked up at every run (settings page edits apply without a restart); its
    SMTP channel is rebuilt only when those settings changed."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.channels = build_channels(ctx)  # webhook and web push: from the config file
        self._mail: MailSettings | None = None
        self._email: Any = None

    def current_channels(self) -> dict[str, Any]:
        mail = runtime_settings.effective_mail(self.ctx)
        if mail != self._mail:
            self._mail = mail
            self._email = build_channels(self.ctx, mail).get("email")
        return {**self.channels, "email": self._email} if self._email is not None else self.channels

    def __call__(self) -> Any:
        from enforcement.outbox import RetryPolicy, dispatch_due

        channels = self.current_channels()
        if not channels:
            return None
        n = self.ctx.settings.notifications
        policy = RetryPolicy(max_attempts=n.retry_max_attempts, base_delay_s=n.retry_base_s, max_delay_s=n.retry_max_s)
        return dispatch_due(self.ctx.session, channels, self.ctx.clock, policy=policy)
