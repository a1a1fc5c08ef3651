"""Dashboard settings pages: mail server (with a test e-mail), site details, retention, CSMS intakes.

Operators see the settings and may send a test e-mail; only admins change them (the same rule as the
JSON API, whose functions these pages call, so validation and the audit stay in one place). Forms
post, then redirect (PRG); a form with errors is rendered again with status 422 and the message next
to its field. Secrets are never put into a page: password and secret inputs are always empty, and an
empty one keeps the stored value. A generated intake secret is shown once, in the answer to the post
that made it (never in a URL).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError

from api.deps import Admin, Ctx, DbSession, Operator, Principal, client_ip
from api.routes import outbox as outbox_api
from api.routes import settings as api
from api.routes.dashboard import back, field_errors, form_dict, page
from models.outbox import OutboxMessage
from service import runtime_settings as rs

router = APIRouter(prefix="/dash/settings", include_in_schema=False)

SECTIONS = [("mail", "Mail server"), ("site", "Site details"), ("retention", "Retention"),
            ("csms-intakes", "CSMS intakes")]
FINAL_STATES = {"sent", "dead"}
M = TypeVar("M", bound=BaseModel)


def _page(request: Request, name: str, principal: Principal, section: str, status_code: int = 200,
          **context: Any) -> HTMLResponse:
    context.setdefault("errors", {})
    context.setdefault("message", request.query_params.get("msg", ""))
    response = page(request, f"dash/{name}", principal, status_code=status_code, sections=SECTIONS,
                    section=section, **context)
    if request.method == "POST" and status_code != 303:
        # A re-rendered form (or a shown secret): keep the page's own address in the history, not the
        # post's, so reloading does not post again or land on a POST-only URL.
        response.headers["HX-Push-Url"] = f"/dash/settings/{section}" if section else "/dash/settings"
        response.headers["Cache-Control"] = "no-store"
    return response


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _lenient(model: type[M], data: dict[str, Any]) -> tuple[M | None, dict[str, str]]:
    """Parse a form; a field of the wrong type (e.g. "abc" for a port) is reported and left at its default,
    so the section's own checks can still report every other field in the same answer."""
    try:
        return model.model_validate(data), {}
    except ValidationError as exc:
        errors = field_errors(exc)
    try:
        return model.model_validate({k: v for k, v in data.items() if k not in errors}), errors
    except ValidationError:
        return None, errors


@router.get("", response_class=HTMLResponse)
def index(request: Request, ctx: Ctx, db: DbSession, principal: Operator) -> HTMLResponse:
    return _page(request, "settings.html", principal, "", mail=api.mail_out(ctx, db), site=api.site_out(ctx, db),
                 retention=api.retention_out(ctx, db), intakes=api.intakes_out(ctx, db))


@router.post("/{section}/reset")
def reset(section: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    if section not in api.SECTION_KEYS:
        raise HTTPException(404, "no such settings section")
    done = api.reset(ctx, db, section, admin, client_ip(request))
    where = "/dash/sources" if section == "sources" else f"/dash/settings/{section}"  # sources have their own page
    return back(f"{where}?msg=" + ("Using+the+config+file%27s+values" if done else "Nothing+to+reset"))


# --- mail -------------------------------------------------------------------------------------


def _mail_form(out: api.MailOut) -> dict[str, str]:
    form = {k: _text(v) for k, v in out.model_dump(include=set(api.MailIn.model_fields)).items()}
    form["enabled"] = "on"  # ticked even while mail is off: whoever fills in a server means to use it
    form["verify_tls"] = "on" if out.verify_tls or not out.enabled else ""
    if not out.enabled:
        form.update(port="587", security="starttls", from_name="Baywarden", timeout_s="30.0")
    return form


def _mail_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
               **context: Any) -> HTMLResponse:
    out = api.mail_out(ctx, db)
    context.setdefault("form", _mail_form(out))
    test = None
    test_id = context.pop("test_id", None) or request.query_params.get("test")
    if test_id:
        test = db.get(OutboxMessage, test_id)
    return _page(request, "settings_mail.html", principal, "mail", status_code, mail=out, test=test,
                 final_states=FINAL_STATES, **context)


@router.get("/mail", response_class=HTMLResponse)
def mail_page(request: Request, ctx: Ctx, db: DbSession, principal: Operator) -> HTMLResponse:
    return _mail_page(request, ctx, db, principal)


@router.post("/mail", response_class=HTMLResponse)
async def save_mail(request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    form = await form_dict(request)
    raw = await request.form()
    data: dict[str, Any] = {k: form.get(k, "") for k in ("host", "port", "security", "username", "from_address",
                                                          "from_name", "timeout_s", "ca_file")}
    data.update(enabled=form.get("enabled") == "on", verify_tls=form.get("verify_tls") == "on",
                clear_password=form.get("clear_password") == "on",
                password=raw.get("password") if isinstance(raw.get("password"), str) else "")  # spaces are allowed
    data = {k: v for k, v in data.items() if v != "" or k in ("from_name",)}
    form.pop("password", None)  # never echoed back into the page
    body, errors = _lenient(api.MailIn, data)
    try:
        if body is not None and errors:
            api.build_mail(ctx, db, body)  # only to list the other fields' errors in the same answer
        elif body is not None:
            api.apply_mail(ctx, db, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        errors = {**exc.errors, **errors}
    if errors or body is None:  # nothing was saved
        return _mail_page(request, ctx, db, admin, 422, form=form, errors=errors)
    return back("/dash/settings/mail?msg=" + ("Mail+settings+saved" if body.enabled else "E-mail+turned+off"))


@router.post("/mail/test", response_class=HTMLResponse)
async def send_test(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    form = await form_dict(request)
    try:
        body = outbox_api.TestEmail(to=form.get("to", ""))
        row = outbox_api.test_email(body, request, ctx, db, op)
    except ValidationError:
        return _mail_page(request, ctx, db, op, 422, test_to=form.get("to", ""),
                          errors={"to": "an e-mail address, e.g. ops@example.org"})
    except HTTPException as exc:
        # Not the address's fault (e.g. e-mail is off): said above the form, not on the Recipient field.
        return _mail_page(request, ctx, db, op, 422, test_to=form.get("to", ""), errors={"_test": str(exc.detail)})
    return back(f"/dash/settings/mail?test={row.id}")


@router.get("/mail/test/{message_id}", response_class=HTMLResponse)
def test_state(message_id: str, request: Request, db: DbSession, principal: Operator) -> HTMLResponse:
    """The test message's state alone, polled by the mail page until it is sent or dead."""
    test = db.get(OutboxMessage, message_id)
    if test is None:
        raise HTTPException(404, "no such message")
    return page(request, "dash/settings_test_state.html", principal, test=test, final_states=FINAL_STATES)


# --- site -------------------------------------------------------------------------------------

SITE_FIELDS = ("name", "legal_name", "registration_number", "address", "contact_email", "contact_phone", "website",
               "language")


def _site_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
               **context: Any) -> HTMLResponse:
    out = api.site_out(ctx, db)
    context.setdefault("form", {k: _text(getattr(out, k)) for k in SITE_FIELDS})
    return _page(request, "settings_site.html", principal, "site", status_code, site=out, **context)


@router.get("/site", response_class=HTMLResponse)
def site_page(request: Request, ctx: Ctx, db: DbSession, principal: Operator) -> HTMLResponse:
    return _site_page(request, ctx, db, principal)


@router.post("/site", response_class=HTMLResponse)
async def save_site(request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    form = await form_dict(request)
    try:
        body = api.SiteIn.model_validate({k: form.get(k, "") for k in SITE_FIELDS})
        api.apply_site(ctx, db, body, admin.name, client_ip(request))
    except ValidationError as exc:
        return _site_page(request, ctx, db, admin, 422, form=form, errors=field_errors(exc))
    except rs.SettingsInvalid as exc:
        return _site_page(request, ctx, db, admin, 422, form=form, errors=exc.errors)
    return back("/dash/settings/site?msg=Site+details+saved")


# --- retention --------------------------------------------------------------------------------

RETENTION_FIELDS = ("evidence_days", "reads_days", "penalties_days", "audit_days")


def _retention_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
                    **context: Any) -> HTMLResponse:
    out = api.retention_out(ctx, db)
    context.setdefault("form", {k: _text(getattr(out, k)) for k in RETENTION_FIELDS})
    return _page(request, "settings_retention.html", principal, "retention", status_code, retention=out,
                 **context)


@router.get("/retention", response_class=HTMLResponse)
def retention_page(request: Request, ctx: Ctx, db: DbSession, principal: Operator) -> HTMLResponse:
    return _retention_page(request, ctx, db, principal)


@router.post("/retention", response_class=HTMLResponse)
async def save_retention(request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    form = await form_dict(request)
    try:
        api.apply_retention(ctx, db, {k: form.get(k, "") for k in RETENTION_FIELDS}, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        return _retention_page(request, ctx, db, admin, 422, form=form, errors=exc.errors)
    return back("/dash/settings/retention?msg=Retention+saved")


# --- CSMS intakes -----------------------------------------------------------------------------


def _intakes_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
                  **context: Any) -> HTMLResponse:
    context.setdefault("form", {"auth": "hmac", "max_skew_s": "300"})
    return _page(request, "settings_intakes.html", principal, "csms-intakes", status_code,
                 intakes=api.intakes_out(ctx, db), **context)


@router.get("/csms-intakes", response_class=HTMLResponse)
def intakes_page(request: Request, ctx: Ctx, db: DbSession, principal: Operator) -> HTMLResponse:
    return _intakes_page(request, ctx, db, principal)


@router.post("/csms-intakes", response_class=HTMLResponse)
async def add_intake(request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    form = await form_dict(request)
    data = {k: form[k] for k in ("auth", "max_skew_s", "secret") if form.get(k)} | {"name": form.get("name", "")}
    form.pop("secret", None)
    body, errors = _lenient(api.IntakeIn, data)
    if errors or body is None:
        try:
            if body is not None:
                api.build_intake(ctx, db, body, body.secret or rs.new_secret())  # the other fields' errors too
        except rs.SettingsInvalid as exc:
            errors = {**exc.errors, **errors}
        return _intakes_page(request, ctx, db, admin, 422, form=form, errors=errors)
    try:
        made = api.add_intake_to(ctx, db, body, admin.name, client_ip(request))
    except rs.SettingsInvalid as exc:
        return _intakes_page(request, ctx, db, admin, 422, form=form, errors=exc.errors)
    if made.secret is None:
        return back(f"/dash/settings/csms-intakes?msg=Intake+{made.name}+added")
    return _intakes_page(request, ctx, db, admin, message=f"Intake {made.name} added", revealed=made)


@router.post("/csms-intakes/{name}/rotate", response_class=HTMLResponse)
def rotate_intake(name: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    made = api.rotate_intake_in(ctx, db, name, admin.name, client_ip(request))
    return _intakes_page(request, ctx, db, admin, message=f"New secret for {name}; the old one no longer works",
                         revealed=made)


@router.post("/csms-intakes/{name}/delete")
def delete_intake(name: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    api.delete_intake_in(ctx, db, name, admin.name, client_ip(request))
    return back("/dash/settings/csms-intakes?msg=Intake+deleted")
