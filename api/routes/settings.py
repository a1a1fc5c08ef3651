"""Settings API: mail server, site details, retention and CSMS intakes, edited at run time.

Roles: operators and admins read (secrets are never returned, only whether one is set); only admins
change anything, because these settings decide where e-mail goes, which CSMS may post events and
how long evidence is kept. A stored section replaces the config file's section until it is reset
(`DELETE /api/v1/settings/{section}`); see service/runtime_settings.py. The test e-mail is
`POST /api/v1/settings/test-email` (api/routes/outbox.py), open to operators.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import Admin, Ctx, DbSession, Operator, Principal, client_ip
from models.settings import CsmsIntakeSettings, MailSettings, RetentionSettings, SiteSettings
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


# --- reset ------------------------------------------------------------------------------------

SECTION_KEYS = {"mail": rs.MAIL, "site": rs.SITE, "retention": rs.RETENTION, "csms-intakes": rs.INTAKES}


def reset(ctx: Ctx, db: DbSession, section: str, principal: Principal, ip: str) -> bool:
    return rs.reset_section(ctx, db, SECTION_KEYS[section], actor=principal.name, ip=ip)


@router.delete("/{section}", status_code=204)
def reset_section(section: Literal["mail", "site", "retention", "csms-intakes"], request: Request, ctx: Ctx,
                  db: DbSession, admin: Admin) -> Response:
    """Forget the edits of a section: the config file's values apply again."""
    reset(ctx, db, section, admin, client_ip(request))
    return Response(status_code=204)
