"""Settings API: mail server, site details, retention, CSMS intakes and outside sources, edited at run time.

Roles: operators and admins read (secrets are never returned, only whether one is set); only admins
change anything, because these settings decide where e-mail goes, which CSMS may post events and
how long evidence is kept. Outside sources are read by viewers too (the Sources page shows them;
secrets never). A stored section replaces the config file's section until it is reset
(`DELETE /api/v1/settings/{section}`); see service/runtime_settings.py. The test e-mail is
`POST /api/v1/settings/test-email` (api/routes/outbox.py), open to operators.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import select

from api.deps import Admin, Ctx, DbSession, Operator, Principal, Viewer, client_ip
from models.settings import (
    CsmsIntakeSettings,
    MailSettings,
    RetentionSettings,
    SiteSettings,
    SourceCamera,
    SourceSettings,
)
from models.tables import BayRow
from service import runtime_settings as rs

router = APIRouter(prefix="/api/v1/settings", tags=["settings"])

INTAKE_PATTERNS = {"name": "letters, digits, dot, dash and underscore only (1 to 64)"}
# Whole-model errors of MailSettings and CsmsIntakeSettings, shown next to the field that can fix them.
_MODEL_ERROR_FIELDS = (("password given without username", "username"), ("a login needs security", "security"),
                       ("secret must be", "secret"))


def _place(errors: dict[str, str]) -> dict[str, str]:
    msg = errors.pop("_", None)
    if msg is not None:
        field = next((f for prefix, f in _MODEL_ERROR_FIELDS if msg.startswith(prefix)), "_")
        errors.setdefault(field, msg)
    return errors


def _invalid(exc: rs.SettingsInvalid) -> HTTPException:
    # The same shape as FastAPI's own 422, so a client reads one format.
    return HTTPException(422, [{"loc": ["body", k], "msg": v, "type": "value_error"} for k, v in exc.errors.items()])


class SectionMeta(BaseModel):
    source: Literal["config", "stored"] = Field(description="config: the config file's values; stored: edited here.")
    updated_at: datetime | None = None
    updated_by: str | None = None


# --- mail -------------------------------------------------------------------------------------


class MailOut(SectionMeta):
    enabled: bool = Field(description="False: no mail server, no e-mail is sent.")
    host: str | None = None
    port: int | None = None
    security: Literal["none", "starttls", "ssl"] | None = None
    username: str | None = None
    password_set: bool = Field(False, description="Whether a password is stored (it is never returned).")
    from_address: str | None = None
    from_name: str | None = None
    timeout_s: float | None = None
    verify_tls: bool | None = None
    ca_file: str | None = None


class MailIn(BaseModel):
    """A whole mail section. `password` empty or absent keeps the stored one; `clear_password` removes it."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    host: str | None = None
    port: int = 587
    security: Literal["none", "starttls", "ssl"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, description="Empty or absent: keep the stored password.")
    clear_password: bool = False
    from_address: str | None = None
    from_name: str = "Baywarden"
    timeout_s: float = 30.0
    verify_tls: bool = True
    ca_file: str | None = None


def mail_out(ctx: Ctx, db: DbSession) -> MailOut:
    mail = rs.effective_mail(ctx, db)
    meta = rs.meta(ctx, rs.MAIL, db)
    if mail is None:
        return MailOut(enabled=False, **meta)
    data = mail.model_dump(mode="json", exclude={"password"})
    return MailOut(enabled=True, password_set=mail.password is not None, **data, **meta)


def build_mail(ctx: Ctx, db: DbSession, body: MailIn) -> MailSettings | None:
    """Validate with the config file's own model, keeping the stored password unless told otherwise."""
    if not body.enabled:
        return None
    current = rs.effective_mail(ctx, db)
    data: dict[str, Any] = body.model_dump(exclude={"enabled", "password", "clear_password"})
    data = {k: (None if isinstance(v, str) and not v.strip() and k != "from_name" else v) for k, v in data.items()}
    errors = {k: "must be one line" for k in ("host", "username", "from_name")
              if isinstance(data.get(k), str) and ("\n" in data[k] or "\r" in data[k])}
    if body.password:
        data["password"] = body.password
    elif not body.clear_password and data.get("username") and current is not None and current.password:
        data["password"] = current.password.get_secret_value()  # empty field: keep the stored password
    try:
        new = MailSettings.model_validate(data)
    except ValidationError as exc:
        errors = {**_place(rs.errors_of(exc)), **errors}
    if errors:
        raise rs.SettingsInvalid(errors)
    return new


def apply_mail(ctx: Ctx, db: DbSession, body: MailIn, actor: str, ip: str) -> MailOut:
    rs.save_mail(ctx, db, build_mail(ctx, db, body), actor=actor, ip=ip)
    return mail_out(ctx, db)


@router.get("/mail", response_model=MailOut)
def get_mail(ctx: Ctx, db: DbSession, _: Operator) -> MailOut:
    """The mail server in use now (the password is never returned, only `password_set`)."""
    return mail_out(ctx, db)


@router.put("/mail", response_model=MailOut)
def put_mail(body: MailIn, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> MailOut:
    """Replace the mail section; it applies to the next message sent (no restart)."""
    try:
        return apply_mail(ctx, db, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        raise _invalid(exc) from None


# --- site -------------------------------------------------------------------------------------


class SiteOut(SectionMeta):
    name: str
    legal_name: str | None = None
    registration_number: str | None = None
    address: str | None = None
    contact_email: str | None = None
    contact_phone: str | None = None
    website: str | None = None
    language: str = "en"


class SiteIn(BaseModel):
    """Site and operator details shown to drivers; empty optional fields are cleared."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(description="Site name shown to drivers and in e-mail subjects (one line).")
    legal_name: str | None = None
    registration_number: str | None = None
    address: str | None = Field(None, description="Postal address; several lines allowed.")
    contact_email: str | None = None
    contact_phone: str | None = None
    website: str | None = None
    language: str = Field("en", description="Language of driver notices: en or de.")


def site_out(ctx: Ctx, db: DbSession) -> SiteOut:
    site = rs.effective_site(ctx, db)
    return SiteOut(**site.model_dump(mode="json"), **rs.meta(ctx, rs.SITE, db))


def apply_site(ctx: Ctx, db: DbSession, body: SiteIn, actor: str, ip: str) -> SiteOut:
    data = {k: (v or None) for k, v in body.model_dump().items()}
    data["language"] = body.language or "en"
    if data["address"]:
        data["address"] = "\n".join(line.strip() for line in data["address"].splitlines() if line.strip()) or None
    errors = {} if data["name"] else {"name": "required"}  # None would mean "the config file's site_name"
    try:
        site = SiteSettings.model_validate(data)
    except ValidationError as exc:
        errors = {**rs.errors_of(exc), **errors}
    if errors:
        raise rs.SettingsInvalid(errors)
    rs.save_site(ctx, db, site, actor=actor, ip=ip)
    return site_out(ctx, db)


@router.get("/site", response_model=SiteOut)
def get_site(ctx: Ctx, db: DbSession, _: Operator) -> SiteOut:
    """Site name and the operator's details printed on driver notices."""
    return site_out(ctx, db)


@router.put("/site", response_model=SiteOut)
def put_site(body: SiteIn, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> SiteOut:
    try:
        return apply_site(ctx, db, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        raise _invalid(exc) from None


# --- retention --------------------------------------------------------------------------------


class RetentionOut(SectionMeta):
    evidence_days: int
    reads_days: int
    penalties_days: int
    audit_days: int


def retention_out(ctx: Ctx, db: DbSession) -> RetentionOut:
    return RetentionOut(**rs.effective_retention(ctx, db).model_dump(), **rs.meta(ctx, rs.RETENTION, db))


def apply_retention(ctx: Ctx, db: DbSession, data: dict[str, Any], actor: str, ip: str) -> RetentionOut:
    try:
        retention = RetentionSettings.model_validate(data)
    except ValidationError as exc:
        raise rs.SettingsInvalid(rs.errors_of(exc)) from None
    rs.save_retention(ctx, db, retention, actor=actor, ip=ip)
    return retention_out(ctx, db)


@router.get("/retention", response_model=RetentionOut)
def get_retention(ctx: Ctx, db: DbSession, _: Operator) -> RetentionOut:
    return retention_out(ctx, db)


@router.put("/retention", response_model=RetentionOut)
def put_retention(body: RetentionSettings, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> RetentionOut:
    """Days to keep evidence, reads and the audit log; the hourly purge uses the new values on its next run."""
    return apply_retention(ctx, db, body.model_dump(), admin.name, client_ip(request))


# --- CSMS intakes -----------------------------------------------------------------------------


class IntakeOut(BaseModel):
    name: str
    auth: Literal["hmac", "bearer"]
    max_skew_s: int
    secret_set: bool = True


class IntakesOut(SectionMeta):
    intakes: list[IntakeOut]


class IntakeSecret(IntakeOut):
    secret: str | None = Field(None, description="A generated secret, shown this once; null when you chose it.")


class IntakeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str
    auth: Literal["hmac", "bearer"] = "hmac"
    max_skew_s: int = 300
    secret: str | None = Field(None, description="16+ characters; empty or absent: a random one is generated.")


class IntakeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    auth: Literal["hmac", "bearer"] | None = None
    max_skew_s: int | None = None
    secret: str | None = Field(None, description="Empty or absent: keep the stored secret.")


def _intake_out(i: CsmsIntakeSettings) -> IntakeOut:
    return IntakeOut(name=i.name, auth=i.auth, max_skew_s=i.max_skew_s)


def intakes_out(ctx: Ctx, db: DbSession) -> IntakesOut:
    return IntakesOut(intakes=[_intake_out(i) for i in rs.effective_intakes(ctx, db)], **rs.meta(ctx, rs.INTAKES, db))


def _validate_intake(data: dict[str, Any]) -> CsmsIntakeSettings:
    try:
        return CsmsIntakeSettings.model_validate(data)
    except ValidationError as exc:
        raise rs.SettingsInvalid(_place(rs.errors_of(exc, INTAKE_PATTERNS))) from None


def _find(intakes: list[CsmsIntakeSettings], name: str) -> int:
    for n, i in enumerate(intakes):
        if i.name == name:
            return n
    raise HTTPException(404, f"no CSMS intake named {name!r}")


def build_intake(ctx: Ctx, db: DbSession, body: IntakeIn, secret: str) -> CsmsIntakeSettings:
    """A new intake, validated with the config file's model; its name must be new."""
    errors: dict[str, str] = {}
    try:
        intake = _validate_intake({**body.model_dump(), "secret": secret})
    except rs.SettingsInvalid as exc:
        errors = exc.errors
    if any(i.name == body.name for i in rs.effective_intakes(ctx, db)):
        errors.setdefault("name", "an intake with this name already exists")
    if len(secret) < 16:  # the model's own check runs only once every field is valid; say it now too
        errors.setdefault("secret", "secret must be at least 16 characters")
    if errors:
        raise rs.SettingsInvalid(errors)
    return intake


def add_intake_to(ctx: Ctx, db: DbSession, body: IntakeIn, actor: str, ip: str) -> IntakeSecret:
    rs.lock_section(db, rs.INTAKES)
    generated = rs.new_secret() if not body.secret else None
    intake = build_intake(ctx, db, body, body.secret or generated or "")
    intakes = rs.effective_intakes(ctx, db)
    rs.save_intakes(ctx, db, [*intakes, intake], actor=actor, ip=ip, action="csms_intake_add",
                    entity_id=f"{rs.INTAKES}:{intake.name}")
    return IntakeSecret(**_intake_out(intake).model_dump(), secret=generated)


def update_intake_in(ctx: Ctx, db: DbSession, name: str, body: IntakeUpdate, actor: str, ip: str) -> IntakeOut:
    rs.lock_section(db, rs.INTAKES)
    intakes = rs.effective_intakes(ctx, db)
    n = _find(intakes, name)
    data = rs.plain(intakes[n])
    data.update({k: v for k, v in body.model_dump().items() if v not in (None, "")})  # empty secret: keep
    intakes[n] = _validate_intake(data)
    rs.save_intakes(ctx, db, intakes, actor=actor, ip=ip, action="csms_intake_update",
                    entity_id=f"{rs.INTAKES}:{name}")
    return _intake_out(intakes[n])


def rotate_intake_in(ctx: Ctx, db: DbSession, name: str, actor: str, ip: str) -> IntakeSecret:
    rs.lock_section(db, rs.INTAKES)
    intakes = rs.effective_intakes(ctx, db)
    n = _find(intakes, name)
    secret = rs.new_secret()
    intakes[n] = _validate_intake({**rs.plain(intakes[n]), "secret": secret})
    rs.save_intakes(ctx, db, intakes, actor=actor, ip=ip, action="csms_intake_rotate",
                    entity_id=f"{rs.INTAKES}:{name}")
    return IntakeSecret(**_intake_out(intakes[n]).model_dump(), secret=secret)


def delete_intake_in(ctx: Ctx, db: DbSession, name: str, actor: str, ip: str) -> None:
    rs.lock_section(db, rs.INTAKES)
    intakes = rs.effective_intakes(ctx, db)
    del intakes[_find(intakes, name)]
    rs.save_intakes(ctx, db, intakes, actor=actor, ip=ip, action="csms_intake_delete",
                    entity_id=f"{rs.INTAKES}:{name}")


@router.get("/csms-intakes", response_model=IntakesOut)
def list_intakes(ctx: Ctx, db: DbSession, _: Operator) -> IntakesOut:
    """CSMSs allowed to post to /api/v1/csms/events and OCPI (secrets are never returned)."""
    return intakes_out(ctx, db)


@router.post("/csms-intakes", response_model=IntakeSecret, status_code=201)
def add_intake(body: IntakeIn, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> IntakeSecret:
    """Add a CSMS; without a `secret` one is generated and returned in this response only."""
    try:
        return add_intake_to(ctx, db, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        raise _invalid(exc) from None


@router.put("/csms-intakes/{name}", response_model=IntakeOut)
def update_intake(name: str, body: IntakeUpdate, request: Request, ctx: Ctx, db: DbSession,
                  admin: Admin) -> IntakeOut:
    """Change an intake's auth, clock skew or secret (an empty secret keeps the stored one)."""
    try:
        return update_intake_in(ctx, db, name, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        raise _invalid(exc) from None


@router.post("/csms-intakes/{name}/rotate", response_model=IntakeSecret)
def rotate_intake(name: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> IntakeSecret:
    """Replace the secret with a generated one, returned in this response only; the old one stops working now."""
    return rotate_intake_in(ctx, db, name, admin.name, client_ip(request))


@router.delete("/csms-intakes/{name}", status_code=204)
def delete_intake(name: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    delete_intake_in(ctx, db, name, admin.name, client_ip(request))
    return Response(status_code=204)


# --- outside sources -------------------------------------------------------------------------

SOURCE_PATTERNS = {
    "name": "lowercase letters, digits, dash and underscore only (1 to 64)",
    "username": "1 to 64 characters without spaces, quotes or backslashes",
    "topic": "letters, digits, _ / and - only (1 to 100)",
    "device_url": "an http:// or https:// address, e.g. http://192.0.2.10",
    "frigate_url": "an http:// or https:// address, e.g. http://frigate:5000",
    "cameras": "bay ids are letters, digits, dot, dash and underscore (1 to 64)",
}
# SourceSettings' whole-model errors, shown next to the field that can fix them.
_SOURCE_MODEL_ERRORS = (("camera ids must be unique", "cameras"), ("a dahua source needs device_url", "device_url"),
                        ("a dahua source needs username", "username"), ("a dahua source needs secret", "secret"),
                        ("dahua camera ids", "cameras"), ("an ftp source needs", "file_pattern"),
                        ("file_pattern", "file_pattern"), ("without a camera group", "cameras"),
                        ("a ", "secret"))  # "a webhook source needs a secret": the last, catch-all prefix
SOURCE_FIELDS = ("kind", "device_url", "username", "topic", "frigate_url", "file_pattern", "time_format",
                 "utc_offset_min", "cameras", "presence_timeout_s", "max_skew_s", "enabled", "max_per_s", "burst")


class SourceOut(BaseModel):
    """A configured source; its secret is never returned, only whether one is set."""

    name: str
    kind: str
    enabled: bool
    cameras: list[SourceCamera]
    secret_set: bool
    device_url: str | None = None
    username: str | None = None
    topic: str
    frigate_url: str | None = None
    file_pattern: str | None = None
    time_format: str
    utc_offset_min: int
    presence_timeout_s: int
    max_skew_s: int
    max_per_s: float
    burst: int
    applies: Literal["now", "after_restart"] = Field(
        description="now: the next request or login uses it; after_restart: the part that holds the connection "
        "reads its sources as it starts (dahua), or its config block is missing (ftp:, mqtt:).")
    note: str | None = None


class SourcesOut(SectionMeta):
    sources: list[SourceOut]


class SourceIn(BaseModel):
    """A source (`sources:` in the config file; README "Outside reads"). On update every field is optional:
    absent fields keep their value, an empty or absent `secret` keeps the stored one."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="Unique, part of the intake URL; cannot be changed by an update.")
    kind: str | None = None
    secret: str | None = Field(None, description="Write-only. Empty or absent on update: keep the stored secret.")
    cameras: list[SourceCamera] | None = Field(None, max_length=500)
    device_url: str | None = None
    username: str | None = None
    topic: str | None = None
    frigate_url: str | None = None
    file_pattern: str | None = None
    time_format: str | None = None
    utc_offset_min: int | None = None
    presence_timeout_s: int | None = None
    max_skew_s: int | None = None
    enabled: bool | None = None
    max_per_s: float | None = None
    burst: int | None = None


def applies(ctx: Ctx, source: SourceSettings) -> tuple[Literal["now", "after_restart"], str | None]:
    """When an edit of `source` takes effect on this instance, and why not now."""
    if source.kind == "dahua":
        return "after_restart", "dahua subscriptions are opened at start: restart Baywarden to apply"
    if source.kind == "ftp" and ctx.settings.ftp is None:
        return "after_restart", "the FTP intake needs an ftp: block in the config file (then a restart)"
    if source.kind == "frigate" and ctx.settings.mqtt is None:
        return "after_restart", "Frigate sources need an mqtt: block in the config file (then a restart)"
    return "now", None


def source_out(ctx: Ctx, source: SourceSettings) -> SourceOut:
    when, note = applies(ctx, source)
    data = source.model_dump(exclude={"secret", "cameras"})
    return SourceOut(**data, cameras=source.cameras, secret_set=source.secret is not None, applies=when, note=note)


def sources_out(ctx: Ctx, db: DbSession) -> SourcesOut:
    return SourcesOut(sources=[source_out(ctx, s) for s in rs.effective_sources(ctx, db)],
                      **rs.meta(ctx, rs.SOURCES, db))


def _place_source(errors: dict[str, str]) -> dict[str, str]:
    msg = errors.pop("_", None)
    if msg is not None:
        field = next((f for prefix, f in _SOURCE_MODEL_ERRORS if msg.startswith(prefix)), "_")
        errors.setdefault(field, msg)
    return errors


def _find_source(sources: list[SourceSettings], name: str) -> int:
    for n, s in enumerate(sources):
        if s.name == name:
            return n
    raise HTTPException(404, f"no source named {name!r}")


def build_source(ctx: Ctx, db: DbSession, data: dict[str, Any], *, others: list[SourceSettings],
                 new_bays: set[str] | None = None) -> SourceSettings:
    """Validate with the config file's own model; the name must be new among `others` and every bay of
    `new_bays` (default: all the source maps) must exist."""
    errors: dict[str, str] = {}
    source = None
    try:
        source = SourceSettings.model_validate(data)
    except ValidationError as exc:
        errors = _place_source(rs.errors_of(exc, SOURCE_PATTERNS))
    if any(s.name == data.get("name") for s in others):
        errors.setdefault("name", "a source with this name already exists")
    cameras = data.get("cameras") or []
    bays = {c["bay_id"] if isinstance(c, dict) else c.bay_id for c in cameras}
    wanted = bays if new_bays is None else new_bays & bays
    known = set(db.exec(select(BayRow.bay_id)))
    unknown = sorted(b for b in wanted if b not in known)
    if unknown:
        errors.setdefault("cameras", f"no bay named {', '.join(unknown)}: add the bay under Bays first, "
                                     f"or map the camera to one of {', '.join(sorted(known)[:20]) or 'none yet'}")
    if errors or source is None:
        raise rs.SettingsInvalid(errors or {"_": "invalid source"})
    return source


def _given(body: SourceIn) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True, exclude={"secret"})
    if "cameras" in data and data["cameras"] is not None:
        data["cameras"] = [c.model_dump() for c in body.cameras or []]
    return data


def add_source_to(ctx: Ctx, db: DbSession, body: SourceIn, actor: str, ip: str) -> SourceOut:
    rs.lock_section(db, rs.SOURCES)
    sources = rs.effective_sources(ctx, db)
    data = {k: v for k, v in _given(body).items() if v is not None}
    if body.secret:
        data["secret"] = body.secret
    if not body.name:
        data["name"] = ""  # reported as its pattern's message, with the other fields' errors
    source = build_source(ctx, db, data, others=sources)
    rs.save_sources(ctx, db, [*sources, source], actor=actor, ip=ip, action="source_add",
                    entity_id=f"{rs.SOURCES}:{source.name}")
    return source_out(ctx, source)


def update_source_in(ctx: Ctx, db: DbSession, name: str, body: SourceIn, actor: str, ip: str) -> SourceOut:
    rs.lock_section(db, rs.SOURCES)
    sources = rs.effective_sources(ctx, db)
    n = _find_source(sources, name)
    if body.name not in (None, name):
        raise rs.SettingsInvalid({"name": "a source cannot be renamed (its counts and intake URL use the name): "
                                          "add a new one and delete this one"})
    current = sources[n]
    data = rs.source_plain(current)
    data.update(_given(body))
    data["name"] = name
    if body.secret:
        data["secret"] = body.secret  # empty or absent: the stored secret stays
    old_bays = {c.bay_id for c in current.cameras}
    updated = build_source(ctx, db, data, others=sources[:n] + sources[n + 1:],
                           new_bays={c.bay_id for c in body.cameras or []} - old_bays)
    sources[n] = updated
    rs.save_sources(ctx, db, sources, actor=actor, ip=ip, action="source_update", entity_id=f"{rs.SOURCES}:{name}")
    return source_out(ctx, updated)


def delete_source_in(ctx: Ctx, db: DbSession, name: str, actor: str, ip: str) -> None:
    rs.lock_section(db, rs.SOURCES)
    sources = rs.effective_sources(ctx, db)
    del sources[_find_source(sources, name)]
    rs.save_sources(ctx, db, sources, actor=actor, ip=ip, action="source_delete", entity_id=f"{rs.SOURCES}:{name}")


@router.get("/sources", response_model=SourcesOut)
def list_source_settings(ctx: Ctx, db: DbSession, _: Viewer) -> SourcesOut:
    """Outside sources in use now (stored edits, else the config file's `sources:`); secrets never returned."""
    return sources_out(ctx, db)


@router.post("/sources", response_model=SourceOut, status_code=201)
def add_source(body: SourceIn, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> SourceOut:
    """Add a source. Webhook, Plate Recognizer, Hikvision, FTP and Frigate sources apply at once on every
    instance; dahua sources at the next start (`applies`)."""
    try:
        return add_source_to(ctx, db, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        raise _invalid(exc) from None


@router.put("/sources/{name}", response_model=SourceOut)
def update_source(name: str, body: SourceIn, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> SourceOut:
    """Change a source: the fields given replace the stored ones (an empty `secret` keeps the stored one)."""
    try:
        return update_source_in(ctx, db, name, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        raise _invalid(exc) from None


@router.delete("/sources/{name}", status_code=204)
def delete_source(name: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    """Remove a source: its requests are refused (404) from now on; its counts stay."""
    delete_source_in(ctx, db, name, admin.name, client_ip(request))
    return Response(status_code=204)


# --- reset ------------------------------------------------------------------------------------

SECTION_KEYS = {"mail": rs.MAIL, "site": rs.SITE, "retention": rs.RETENTION, "csms-intakes": rs.INTAKES,
                "sources": rs.SOURCES}


def reset(ctx: Ctx, db: DbSession, section: str, principal: Principal, ip: str) -> bool:
    return rs.reset_section(ctx, db, SECTION_KEYS[section], actor=principal.name, ip=ip)


@router.delete("/{section}", status_code=204)
def reset_section(section: Literal["mail", "site", "retention", "csms-intakes", "sources"], request: Request, ctx: Ctx,
                  db: DbSession, admin: Admin) -> Response:
    """Forget the edits of a section: the config file's values apply again."""
    reset(ctx, db, section, admin, client_ip(request))
    return Response(status_code=204)
