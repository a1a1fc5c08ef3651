"""Settings that operators edit at run time, layered over the config file.

Sections `mail`, `site`, `retention` and `csms_intakes` live in the config file (and environment)
as before; the settings pages store an edited section as one `runtime_settings` row. Precedence: a
stored section replaces the whole config section (no field-by-field merge, so what the page shows
is exactly what runs); deleting the row ("reset") brings the config file's section back.

Every reader asks here at use time (`effective_*`), so an edit applies without a restart. Stored
data is validated with the same pydantic models as the config file; a row that no longer validates
(hand-edited, or written by another version) is logged once and the config section is used instead,
so it can never stop the service from starting. CSMS intakes and outside sources are the exception:
each stored item is checked on its own and a bad one is skipped, because falling back to the config
list could bring back an intake or source (or a secret) that an operator deleted.

Secrets (the SMTP password, intake and source secrets) are stored like the config file stores them, in clear,
because SMTP AUTH and HMAC need the value itself; they are never returned by the API and are masked
in the audit log.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import event as sa_event
from sqlmodel import Session

from models import audit
from models.settings import CsmsIntakeSettings, MailSettings, RetentionSettings, SiteSettings, SourceSettings
from models.tables import RuntimeSetting
from service.context import AppContext

log = logging.getLogger(__name__)

MAIL, SITE, RETENTION, INTAKES, SOURCES = "mail", "site", "retention", "csms_intakes", "sources"
SECTIONS = (MAIL, SITE, RETENTION, INTAKES, SOURCES)
MASK = "***"
# Human messages for pattern checks, whose pydantic text would quote the regular expression.
PATTERN_MESSAGES = {
    "name": "one line of text, not blank",
    "legal_name": "one line of text, not blank",
    "registration_number": "one line of text, not blank",
    "contact_phone": "digits, spaces and + ( ) . / - only, e.g. +44 20 7946 0000",
    "website": "an http:// or https:// address",
}
_warned: set[tuple[str, str]] = set()


class SettingsInvalid(ValueError):
    """A section that does not validate; `errors` maps a field name ("_" for the whole form) to a message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def errors_of(exc: ValidationError, patterns: dict[str, str] | None = None) -> dict[str, str]:
    """Pydantic errors keyed by their first field ("_": the whole model), with readable pattern messages."""
    patterns = PATTERN_MESSAGES if patterns is None else patterns
    out: dict[str, str] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = str(loc[0]) if loc else "_"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch" and key in patterns:
            msg = patterns[key]
        elif err["type"] == "missing" or (err.get("input", "") is None and err["type"].endswith("_type")):
            msg = "required"
        out.setdefault(key, msg)
    return out


def plain(model: BaseModel) -> dict[str, Any]:
    """A model as JSON-safe data with its secrets revealed (for storage only; never for output)."""

    def conv(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return v.get_secret_value()
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return {k: conv(getattr(model, k)) for k in type(model).model_fields}


def new_secret() -> str:
    """A fresh intake secret: 256 random bits, URL-safe (fits a header and a config file)."""
    return secrets.token_urlsafe(32)


# --- reading ----------------------------------------------------------------------------------


def stored_row(ctx: AppContext, key: str, db: Session | None = None) -> RuntimeSetting | None:
    """The stored edit of a section, read in the caller's transaction when one is given."""
    if db is not None:
        return db.get(RuntimeSetting, key)
    with ctx.session() as own:
        return own.get(RuntimeSetting, key)


def _bad_row(key: str, row: RuntimeSetting, exc: Exception) -> None:
    marker = (key, repr(row.value)[:200])
    if marker not in _warned:  # read on every page and message: say it once, not every time
        _warned.add(marker)
        log.error("stored settings %r (by %s at %s) are invalid, using the config file's instead: %s",
                  key, row.updated_by, row.updated_at, exc)


def config_site(ctx: AppContext) -> SiteSettings:
    cfg = ctx.settings
    site = cfg.site or SiteSettings()
    return site if site.name else site.model_copy(update={"name": cfg.site_name})


def effective_mail(ctx: AppContext, db: Session | None = None) -> MailSettings | None:
    """The mail server to use now; None: no e-mail is sent."""
    row = stored_row(ctx, MAIL, db)
    if row is None:
        return ctx.settings.mail
    if row.value == {"enabled": False}:
        return None
    try:
        return MailSettings.model_validate(row.value)
    except ValidationError as exc:
        _bad_row(MAIL, row, exc)
        return ctx.settings.mail


def effective_site(ctx: AppContext, db: Session | None = None) -> SiteSettings:
    """Site and operator details; `name` is always set."""
    row = stored_row(ctx, SITE, db)
    if row is None:
        return config_site(ctx)
    try:
        site = SiteSettings.model_validate(row.value)
    except ValidationError as exc:
        _bad_row(SITE, row, exc)
        return config_site(ctx)
    return site if site.name else site.model_copy(update={"name": config_site(ctx).name})


def site_name(ctx: AppContext, db: Session | None = None) -> str:
    return effective_site(ctx, db).name or ctx.settings.site_name


def site_context(site: SiteSettings) -> dict[str, Any]:
    """The operator details that driver notices print (optional keys of the notice templates)."""
    return {"operator_name": site.legal_name, "operator_address": site.address,
            "operator_registration": site.registration_number, "contact_email": site.contact_email,
            "contact_phone": site.contact_phone, "lang": site.language}


def effective_retention(ctx: AppContext, db: Session | None = None) -> RetentionSettings:
    row = stored_row(ctx, RETENTION, db)
    if row is None:
        return ctx.settings.retention
    try:
        return RetentionSettings.model_validate(row.value)
    except ValidationError as exc:
        _bad_row(RETENTION, row, exc)
        return ctx.settings.retention


def effective_intakes(ctx: AppContext, db: Session | None = None) -> list[CsmsIntakeSettings]:
    """The CSMSs allowed to post events now (read per request, so a rotated secret applies at once)."""
    row = stored_row(ctx, INTAKES, db)
    if row is None:
        return list(ctx.settings.csms_intakes)
    items = row.value.get("intakes") if isinstance(row.value, dict) else None
    if not isinstance(items, list):
        _bad_row(INTAKES, row, ValueError("no list of intakes"))
        return []  # never the config list: it could bring back a deleted intake
    out = []
    for item in items:
        try:
            out.append(CsmsIntakeSettings.model_validate(item))
        except ValidationError as exc:
            _bad_row(f"{INTAKES}:{item.get('name') if isinstance(item, dict) else '?'}", row, exc)
    return out


# Sources are read on every intake request: the stored JSON's text -> its parsed list, so a read costs
# one primary-key lookup, not 200 pydantic validations. Keyed by content, never by time or instance.
_sources_cache: tuple[str, list[SourceSettings]] | None = None
_sources_lock = threading.Lock()


def _parse_sources(row: RuntimeSetting) -> list[SourceSettings]:
    global _sources_cache
    text = json.dumps(row.value, sort_keys=True)
    with _sources_lock:
        if _sources_cache is not None and _sources_cache[0] == text:
            return list(_sources_cache[1])
    items = row.value.get("sources") if isinstance(row.value, dict) else None
    if not isinstance(items, list):
        _bad_row(SOURCES, row, ValueError("no list of sources"))
        return []  # never the config list: it could bring back a deleted source
    out: list[SourceSettings] = []
    for item in items:
        try:
            out.append(SourceSettings.model_validate(item))
        except ValidationError as exc:
            _bad_row(f"{SOURCES}:{item.get('name') if isinstance(item, dict) else '?'}", row, exc)
    with _sources_lock:
        _sources_cache = (text, out)
    return list(out)


# How long the intakes may use the sources they read: an edit reaches every other instance of a fleet
# within this; this instance drops its copy with the edit's commit.
SOURCES_TTL_S = 1.0


def effective_sources(ctx: AppContext, db: Session | None = None) -> list[SourceSettings]:
    """The outside sources in use now: the stored list when one is stored, else the config file's.

    With the caller's transaction (pages, the settings API) the row is read there. Without one (every
    intake request and message) the list read within the last `SOURCES_TTL_S` is used: hundreds of
    requests a second must not each check out a connection, on the event loop, to read one row."""
    if db is None:
        cached = ctx.sources_cache
        if cached is not None and time.monotonic() - cached[0] < SOURCES_TTL_S:
            return list(cached[1])
    read_at = time.monotonic()
    row = stored_row(ctx, SOURCES, db)
    sources = list(ctx.settings.sources) if row is None else _parse_sources(row)
    if db is None:
        ctx.sources_cache = (read_at, sources)
    return list(sources)


def _forget_sources(ctx: AppContext, db: Session) -> None:
    """This instance's intakes read the sources again once the edit commits (and already now)."""
    ctx.sources_cache = None

    def drop(_session: Session) -> None:
        ctx.sources_cache = None

    sa_event.listen(db, "after_commit", drop, once=True)


def sources_at_start(ctx: AppContext) -> list[SourceSettings]:
    """`effective_sources` for parts that read them once as they start; the config file's when the
    database is not reachable or not migrated yet, so the service still starts."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return effective_sources(ctx)
    except SQLAlchemyError as exc:
        log.warning("stored sources not read, using the config file's: %s", str(exc).splitlines()[0])
        return list(ctx.settings.sources)


def find_source(ctx: AppContext, name: str, db: Session | None = None) -> SourceSettings | None:
    return next((s for s in effective_sources(ctx, db) if s.name == name), None)


# --- masking for output and the audit log ---------------------------------------------------------


def _secret_mark(new: SecretStr | None, old: SecretStr | None) -> str | None:
    if new is None:
        return None
    return MASK if old is not None and new == old else f"{MASK} (changed)" if old is not None else f"{MASK} (set)"


def masked_mail(mail: MailSettings | None, before: MailSettings | bool | None = False) -> dict[str, Any]:
    """`before` (the section before an edit; None: mail was off) marks a new or changed password."""
    if mail is None:
        return {"enabled": False}
    data = mail.model_dump(mode="json")
    old = mail.password if before is False else before.password if isinstance(before, MailSettings) else None
    data["password"] = _secret_mark(mail.password, old)
    return data


def masked_intakes(intakes: list[CsmsIntakeSettings],
                   before: list[CsmsIntakeSettings] | None = None) -> dict[str, Any]:
    old = {i.name: i.secret for i in (before if before is not None else intakes)}
    return {"intakes": [{"name": i.name, "auth": i.auth, "max_skew_s": i.max_skew_s,
                         "secret": _secret_mark(i.secret, old.get(i.name))} for i in intakes]}


def source_plain(source: SourceSettings) -> dict[str, Any]:
    """A source as JSON-safe data with its secret revealed (for storage only)."""
    data = source.model_dump(mode="json")
    data["secret"] = source.secret.get_secret_value() if source.secret is not None else None
    return data


def masked_sources(sources: list[SourceSettings], before: list[SourceSettings] | None = None) -> dict[str, Any]:
    old = {s.name: s.secret for s in (before if before is not None else sources)}
    out = []
    for s in sources:
        data = s.model_dump(mode="json")
        data["secret"] = _secret_mark(s.secret, old.get(s.name))
        out.append(data)
    return {"sources": out}


# --- writing ------------------------------------------------------------------------------------


def _store(ctx: AppContext, db: Session, key: str, value: dict[str, Any] | None, *, actor: str, ip: str,
           action: str, entity_id: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Upsert (or with value None delete) one section and audit it, in one commit."""
    now = ctx.clock()
    if key == SOURCES:
        _forget_sources(ctx, db)
    row = db.get(RuntimeSetting, key)
    if value is None:
        if row is not None:
            db.delete(row)
    elif row is None:
        db.add(RuntimeSetting(key=key, value=value, updated_at=now, updated_by=actor))
    else:
        row.value, row.updated_at, row.updated_by = value, now, actor  # a new dict: JSON columns track assignment
        db.add(row)
    audit.record(db, actor=actor, action=action, entity="settings", entity_id=entity_id,
                 before=before, after=after, ip=ip, at=now)
    db.commit()


def save_mail(ctx: AppContext, db: Session, mail: MailSettings | None, *, actor: str, ip: str = "") -> None:
    before = effective_mail(ctx, db)
    _store(ctx, db, MAIL, plain(mail) if mail is not None else {"enabled": False}, actor=actor, ip=ip,
           action="settings_update", entity_id=MAIL, before=masked_mail(before), after=masked_mail(mail, before))


def save_site(ctx: AppContext, db: Session, site: SiteSettings, *, actor: str, ip: str = "") -> None:
    before = effective_site(ctx, db)
    _store(ctx, db, SITE, site.model_dump(mode="json"), actor=actor, ip=ip, action="settings_update",
           entity_id=SITE, before=before.model_dump(mode="json"), after=site.model_dump(mode="json"))


def save_retention(ctx: AppContext, db: Session, retention: RetentionSettings, *, actor: str,
                   ip: str = "") -> None:
    before = effective_retention(ctx, db)
    _store(ctx, db, RETENTION, retention.model_dump(mode="json"), actor=actor, ip=ip,
           action="settings_update", entity_id=RETENTION, before=before.model_dump(mode="json"),
           after=retention.model_dump(mode="json"))


def save_intakes(ctx: AppContext, db: Session, intakes: list[CsmsIntakeSettings], *, actor: str, ip: str = "",
                 action: str = "settings_update", entity_id: str = INTAKES) -> None:
    names = [i.name for i in intakes]
    if len(names) != len(set(names)):
        raise SettingsInvalid({"name": "an intake with this name already exists"})
    before = effective_intakes(ctx, db)
    _store(ctx, db, INTAKES, {"intakes": [plain(i) for i in intakes]}, actor=actor, ip=ip, action=action,
           entity_id=entity_id, before=masked_intakes(before), after=masked_intakes(intakes, before))


def save_sources(ctx: AppContext, db: Session, sources: list[SourceSettings], *, actor: str, ip: str = "",
                 action: str = "settings_update", entity_id: str = SOURCES) -> None:
    names = [s.name for s in sources]
    if len(names) != len(set(names)):
        raise SettingsInvalid({"name": "a source with this name already exists"})
    before = effective_sources(ctx, db)
    _store(ctx, db, SOURCES, {"sources": [source_plain(s) for s in sources]}, actor=actor, ip=ip, action=action,
           entity_id=entity_id, before=masked_sources(before), after=masked_sources(sources, before))


def reset_section(ctx: AppContext, db: Session, key: str, *, actor: str, ip: str = "") -> bool:
    """Forget the stored edit: the config file's section applies again. False when nothing was stored."""
    if key not in SECTIONS:
        raise KeyError(key)
    if db.get(RuntimeSetting, key) is None:
        return False
    readers = {MAIL: lambda: masked_mail(effective_mail(ctx, db)),
               SITE: lambda: effective_site(ctx, db).model_dump(mode="json"),
               RETENTION: lambda: effective_retention(ctx, db).model_dump(mode="json"),
               INTAKES: lambda: masked_intakes(effective_intakes(ctx, db)),
               SOURCES: lambda: masked_sources(effective_sources(ctx, db))}
    before = readers[key]()
    after = {MAIL: lambda: masked_mail(ctx.settings.mail), SITE: lambda: config_site(ctx).model_dump(mode="json"),
             RETENTION: lambda: ctx.settings.retention.model_dump(mode="json"),
             INTAKES: lambda: masked_intakes(list(ctx.settings.csms_intakes)),
             SOURCES: lambda: masked_sources(list(ctx.settings.sources))}[key]()
    _store(ctx, db, key, None, actor=actor, ip=ip, action="settings_reset", entity_id=key, before=before, after=after)
    return True


def meta(ctx: AppContext, key: str, db: Session | None = None) -> dict[str, Any]:
    """Where a section's values come from now: `source` config or stored, and who stored them when."""
    row = stored_row(ctx, key, db)
    if row is None:
        return {"source": "config", "updated_at": None, "updated_by": None}
    return {"source": "stored", "updated_at": row.updated_at, "updated_by": row.updated_by}


def lock_section(db: Session, key: str) -> None:
    """Read-modify-write of a list section: lock its row (PostgreSQL) so two edits cannot lose one."""
    db.get(RuntimeSetting, key, with_for_update=True)
