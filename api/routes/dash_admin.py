"""Dashboard pages for administration and figures: users and roles, the notification outbox, occupancy
charts and the about page. Same pattern as `api/routes/dashboard.py`: actions call the JSON routes' own
functions (validation and audit stay in one place), errors come back as 422 next to the field, and a
success redirects (PRG)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.deps import SESSION_COOKIE, Admin, Ctx, DbSession, Operator, Principal, Viewer, client_ip
from api.pagination import Offset
from api.routes import auth as auth_api
from api.routes import outbox as outbox_api
from api.routes import stats as stats_api
from api.routes import users as users_api
from api.routes.dashboard import back, field_errors, form_dict, page
from models.outbox import OutboxState
from models.tables import Role, User, UserCreate, UserUpdate

router = APIRouter(prefix="/dash", include_in_schema=False)

ROLES = [Role.viewer, Role.operator, Role.admin]  # `device` is for tokens, never for people


def _url(path: str, **query: Any) -> str:
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{path}?{urlencode(q)}" if q else path


def _detail(exc: HTTPException) -> str:
    return exc.detail if isinstance(exc.detail, str) else str(exc.detail)


# --- users and roles ------------------------------------------------------------------------


def _users_page(request: Request, db: DbSession, admin: Principal, status_code: int = 200,
                **context: Any) -> HTMLResponse:
    context.setdefault("form", {"role": Role.viewer.value})
    context.setdefault("errors", {})
    context.setdefault("edit", {"id": None, "form": {}, "errors": {}})
    return page(request, "dash/users.html", admin, status_code=status_code, roles=ROLES,
                users=users_api.list_users(db, admin, offset=0, limit=500),
                me=admin.user.id if admin.user else None, **context)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, db: DbSession, principal: Admin, msg: str = "", error: str = "") -> HTMLResponse:
    return _users_page(request, db, principal, message=msg, error=error)


@router.post("/users", response_class=HTMLResponse)
async def create_user(request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    form = await form_dict(request)
    data = {"username": form.get("username", ""), "full_name": form.get("full_name", ""),
            "email": form.get("email") or None, "role": form.get("role", ""), "password": form.get("password", "")}
    try:
        body = UserCreate.model_validate(data)
        users_api.add_user(body, request, ctx, db, admin)
    except ValidationError as exc:
        return _users_page(request, db, admin, 422, form=_no_password(form), errors=field_errors(exc))
    except HTTPException as exc:
        return _users_page(request, db, admin, 422, form=_no_password(form), errors={"username": _detail(exc)})
    return back(_url("/dash/users", msg=f"User {body.username} created"))


def _no_password(form: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in form.items() if k != "password"}  # never echoed back into the page


def _edit_error(request: Request, db: DbSession, admin: Principal, user_id: str, form: dict[str, str],
                errors: dict[str, str]) -> HTMLResponse:
    return _users_page(request, db, admin, 422, edit={"id": user_id, "form": _no_password(form), "errors": errors})


def _after_self_change(admin: Principal, user: User, message: str) -> Response:
    """After changing one's own account the users page may be out of reach: go where the session still works."""
    if admin.user is None or user.id != admin.user.id:
        return back(_url("/dash/users", msg=message))
    if not user.is_active:
        return back(_url("/login", next="/dash"))  # the update ended every session of the account
    if user.role != Role.admin:
        return back("/dash")
    return back(_url("/dash/users", msg=message))


@router.post("/users/{user_id}", response_class=HTMLResponse)
async def update_user(user_id: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    form = await form_dict(request)
    data = {"full_name": form.get("full_name", ""), "email": form.get("email") or None,
            "role": form.get("role", ""), "is_active": form.get("is_active") == "on"}
    try:
        user = users_api.update_user(user_id, UserUpdate.model_validate(data), request, ctx, db, admin)
    except ValidationError as exc:
        return _edit_error(request, db, admin, user_id, form, field_errors(exc))
    except HTTPException as exc:
        if exc.status_code == 404:
            return back(_url("/dash/users", error=_detail(exc)))
        # The last-admin guard: the role or the active switch is what the admin must change back.
        key = "is_active" if data["is_active"] is False and data["role"] == Role.admin.value else "role"
        return _edit_error(request, db, admin, user_id, form, {key: _detail(exc)})
    return _after_self_change(admin, user, f"User {user.username} updated")


@router.post("/users/{user_id}/password", response_class=HTMLResponse)
async def reset_password(user_id: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    form = await form_dict(request)
    try:
        body = UserUpdate.model_validate({"password": form.get("password", "")})
        user = users_api.update_user(user_id, body, request, ctx, db, admin)
    except ValidationError as exc:
        return _edit_error(request, db, admin, user_id, form, field_errors(exc))
    except HTTPException as exc:
        return back(_url("/dash/users", error=_detail(exc)))
    if admin.user is not None and user.id == admin.user.id:
        return back(_url("/login", next="/dash/users"))  # a new password ends one's own sessions too
    return back(_url("/dash/users", msg=f"Password of {user.username} reset; their sessions were ended"))


@router.post("/users/{user_id}/delete", response_class=HTMLResponse)
def delete_user(user_id: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    user = db.get(User, user_id)
    name = user.username if user else user_id
    try:
        users_api.delete_user(user_id, request, ctx, db, admin)
    except HTTPException as exc:
        return _users_page(request, db, admin, 422, error=f"{name}: {_detail(exc)}")
    return back(_url("/dash/users", msg=f"User {name} deleted"))


@router.post("/switch-user")
async def switch_user(request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> Response:
    """Log out and open the login form, keeping the page to return to (`next`) for the next user."""
    form = await form_dict(request)
    target = auth_api._safe_next(form.get("next") or "/dash")
    if principal.session is not None:
        auth_api._end_session(ctx, db, principal, client_ip(request))
    resp = RedirectResponse(_url("/login", next=target), status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


# --- notifications outbox -------------------------------------------------------------------

OUTBOX_PAGE = 50
RESENDABLE = {OutboxState.failed, OutboxState.dead}


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(request: Request, db: DbSession, principal: Operator, state: str = "", offset: Offset = 0,
                msg: str = "", error: str = "") -> HTMLResponse:
    """Newest changes first, `OUTBOX_PAGE` a page (offset: the list is short-lived, sent rows are purged)."""
    chosen = OutboxState(state) if state in OutboxState.__members__ else None
    offset = max(0, offset)
    rows = outbox_api.outbox(db, principal, state=chosen, limit=OUTBOX_PAGE + 1, offset=offset)
    more, rows = len(rows) > OUTBOX_PAGE, rows[:OUTBOX_PAGE]
    counts = outbox_api.outbox_counts(db, principal)
    state_q = chosen.value if chosen else ""
    return page(request, "dash/outbox.html", principal, messages=rows, counts=counts, total=sum(counts.values()),
                state=state_q, states=[s.value for s in OutboxState], resendable={s.value for s in RESENDABLE},
                message=msg, error=error, offset=offset,
                prev_url=_url("/dash/outbox", state=state_q, offset=max(0, offset - OUTBOX_PAGE) or None)
                if offset else None,
                next_url=_url("/dash/outbox", state=state_q, offset=offset + OUTBOX_PAGE) if more else None)


@router.post("/outbox/{message_id}/resend")
async def resend_message(message_id: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    form = await form_dict(request)
    state = form.get("state", "")
    try:
        outbox_api.resend_message(message_id, request, ctx, db, op)
    except HTTPException as exc:
        return back(_url("/dash/outbox", state=state, error=_detail(exc)))
    return back(_url("/dash/outbox", state=state, msg="Message queued to be sent again"))


# --- occupancy and idle charts --------------------------------------------------------------

PLOT_H = 140  # px of 100 %
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 46
DAY_CHOICES = (1, 7, 14, 30)


def fmt_min(minutes: float) -> str:
    """90.4 -> '1 h 30 min'; for tooltips and the table."""
    m = round(minutes)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


@dataclass(frozen=True)
class Bar:
    day: str
    label: str  # x axis text, empty when thinned out
    x: float
    width: float
    occ_y: float
    occ_h: float  # the whole occupied share, from the axis up
    idle_y: float
    idle_h: float  # the idle part, drawn on top of the occupied bar
    title: str


@dataclass(frozen=True)
class BayChart:
    bay_id: str
    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # (y, label)
    summary: str  # text alternative of the whole chart


def _short_day(d: date) -> str:
    return d.strftime("%a %d")


def bay_chart(bay: stats_api.BayStatsOut) -> BayChart:
    """Geometry of one bay's chart: a bar per day, its height the occupied share of the day (of the elapsed
    part today), the idle part in another colour on top of it."""
    n = max(1, len(bay.days))
    slot = 44 if n <= 14 else max(12, 640 // n)
    step = max(1, -(-44 // slot))  # label every `step`th day: a label needs about 44 px
    bars = []
    for i, d in enumerate(bay.days):
        day = date.fromisoformat(d.date)
        occ_h = PLOT_H * min(d.occupancy_pct, 100.0) / 100
        idle_h = min(occ_h, PLOT_H * min(d.idle_pct, 100.0) / 100)
        base = TOP + PLOT_H
        title = (f"Bay {bay.bay_id}, {day.strftime('%a %Y-%m-%d')}: occupied {fmt_min(d.occupied_min)} "
                 f"({d.occupancy_pct:.0f} %), idle {fmt_min(d.idle_min)} ({d.idle_pct:.0f} %), "
                 f"{d.visits} visit{'s' if d.visits != 1 else ''}")
        bars.append(Bar(day=d.date, label=_short_day(day) if (n - 1 - i) % step == 0 else "",
                        x=LEFT + i * slot + slot * 0.15, width=round(slot * 0.7, 1),
                        occ_y=round(base - occ_h, 1), occ_h=round(occ_h, 1),
                        idle_y=round(base - occ_h, 1), idle_h=round(idle_h, 1), title=title))
    ticks = [(TOP + PLOT_H - PLOT_H * p / 100, f"{p} %") for p in (0, 25, 50, 75, 100)]
    summary = (f"Bay {bay.bay_id}: occupied {fmt_min(bay.occupied_min)} and idle {fmt_min(bay.idle_min)} "
               f"over {n} day{'s' if n != 1 else ''}")
    return BayChart(bay_id=bay.bay_id, width=LEFT + n * slot + RIGHT, height=TOP + PLOT_H + BOTTOM, bars=bars,
                    ticks=ticks, summary=summary)


@router.get("/charts", response_class=HTMLResponse)
def charts_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, days: int = 7,
                bay_id: str = "") -> HTMLResponse:
    days = min(max(days, 1), 90)
    data = stats_api.bay_stats(db, ctx, principal, days=days, bay_id=bay_id or None)
    return page(request, "dash/charts.html", principal, stats=data, charts=[bay_chart(b) for b in data.bays],
                days=days, bay_id=bay_id, day_choices=sorted({*DAY_CHOICES, days}), fmt_min=fmt_min,
                bay_ids=stats_api.bay_ids(db, ctx.settings), plot={"left": LEFT, "top": TOP, "h": PLOT_H})


# --- about ----------------------------------------------------------------------------------


@router.get("/about", response_class=HTMLResponse)
def about_page(request: Request, ctx: Ctx, principal: Viewer) -> HTMLResponse:
    return page(request, "dash/about.html", principal, about=stats_api.about(ctx, principal))


# --- outside sources --------------------------------------------------------------------------


def decode_sample(ctx: Any, name: str, body: str) -> dict[str, Any]:
    """What a source would make of `body` (its format: JSON, XML, a file name for ftp, `topic` + newline +
    payload for frigate), without storing anything: the reads, each with the bay its camera maps to."""
    from service.sources import bay_for, find_source
    from sources import formats
    from sources.reads import SourceError

    source = find_source(ctx, name)
    if source is None:
        return {"error": f"no source named {name!r} is configured"}
    now = ctx.clock()
    raw = body.encode()[:256 * 1024]
    try:
        if source.kind == "webhook":
            reads = formats.webhook_reads(raw, now)
        elif source.kind == "platerecognizer":
            reads = formats.platerecognizer_reads(formats._json(raw), now)
        elif source.kind == "hikvision":
            reads = formats.hikvision_reads(raw, now)
        elif source.kind == "ftp":
            reads = [formats.filename_read(body.strip(), b"\xff\xd8", source.file_pattern or "", source.time_format,
                                           source.utc_offset_min, source.cameras[0].id, now)]
        elif source.kind == "dahua":
            from sources import dahua

            reads = dahua.text_reads(raw, now)
        else:
            topic, _, payload = body.partition("\n")
            reads = formats.frigate_reads(topic.strip(), payload.encode(), source.topic, now)
    except SourceError as exc:
        return {"error": str(exc)}
    def bay(r: Any) -> str | None:
        if source.kind == "dahua":  # "0/1": lane 1 of channel 0, never channel 1
            from sources.dahua import mapped_camera

            cam = mapped_camera(r, [c.id for c in source.cameras])
            return next((c.bay_id for c in source.cameras if c.id == cam), None)
        return bay_for(source, r)

    return {"reads": [{"camera": r.camera_id, "bay": bay(r), "plate": r.plate, "raw": r.raw_text,
                       "confidence": r.confidence, "at": r.at, "left": r.left} for r in reads]}


SOURCE_KINDS = [("webhook", "Our signed JSON (webhook)"), ("platerecognizer", "Plate Recognizer webhook"),
                ("hikvision", "Hikvision ISAPI push"), ("ftp", "FTP upload (plate in the file name)"),
                ("frigate", "Frigate over MQTT"), ("dahua", "Dahua camera (Baywarden subscribes)")]
SOURCE_TEXT = ("name", "kind", "device_url", "username", "topic", "frigate_url", "file_pattern", "time_format",
               "utc_offset_min", "presence_timeout_s", "max_skew_s", "max_per_s", "burst")


def cameras_text(cameras: list[Any]) -> str:
    """Camera-to-bay mappings as the form shows them: one `camera id = bay id` a line."""
    return "\n".join(f"{c.id} = {c.bay_id}" for c in cameras)


def _source_form(out: Any | None) -> dict[str, str]:
    if out is None:  # the add form: the model's defaults
        return {"kind": "webhook", "topic": "frigate", "time_format": "%Y%m%d%H%M%S", "utc_offset_min": "0",
                "presence_timeout_s": "300", "max_skew_s": "300", "max_per_s": "50", "burst": "200", "enabled": "on"}
    form = {k: "" if getattr(out, k) is None else str(getattr(out, k)) for k in SOURCE_TEXT}
    form.update(cameras=cameras_text(out.cameras), enabled="on" if out.enabled else "")
    return form


def _source_body(form: dict[str, str], raw_secret: Any, *, update: bool) -> tuple[Any, dict[str, str]]:
    """The API's SourceIn from the form: empty optional fields are cleared (on update) or left to the
    model's defaults (on add); the cameras textarea is parsed line by line."""
    from api.routes import settings as settings_api

    errors: dict[str, str] = {}
    cameras = []
    for n, line in enumerate(form.get("cameras", "").splitlines(), 1):
        if not line.strip():
            continue
        cam, sep, bay = line.rpartition("=")
        if not sep or not cam.strip() or not bay.strip():
            errors["cameras"] = f"line {n}: write it as camera id = bay id, e.g. lane1 = B1"
            break
        cameras.append({"id": cam.strip(), "bay_id": bay.strip()})
    data: dict[str, Any] = {"cameras": cameras, "enabled": form.get("enabled") == "on"}
    for key in SOURCE_TEXT:
        value = form.get(key, "")
        if value != "":
            data[key] = value
        elif update and key in ("device_url", "username", "frigate_url", "file_pattern"):
            data[key] = None  # an emptied optional field clears it
    if update:
        data.pop("name", None)
    if isinstance(raw_secret, str) and raw_secret:
        data["secret"] = raw_secret  # spaces are allowed; empty keeps the stored secret
    try:
        return settings_api.SourceIn.model_validate(data), errors
    except ValidationError as exc:
        return None, {**field_errors(exc), **errors}


def _sources_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
                  **context: Any) -> HTMLResponse:
    from api.routes import settings as settings_api
    from api.routes import sources as sources_api

    config = settings_api.sources_out(ctx, db)
    edit = context.pop("edit", None) or request.query_params.get("edit") or None
    editing = next((s for s in config.sources if s.name == edit), None)
    context.setdefault("form", _source_form(editing))
    context.setdefault("errors", {})
    context.setdefault("message", request.query_params.get("msg", ""))
    context.setdefault("chosen", request.query_params.get("source", ""))
    context.setdefault("sample", "")
    context.setdefault("decoded", None)
    response = page(request, "dash/sources.html", principal, status_code=status_code,
                    sources=sources_api.list_sources(ctx, db, principal), config=config, editing=editing,
                    kinds=SOURCE_KINDS, **context)
    if request.method == "POST" and status_code != 303:
        response.headers["HX-Push-Url"] = f"/dash/sources?edit={editing.name}" if editing else "/dash/sources"
        response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/sources", response_class=HTMLResponse)
def sources_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, source: str = "",
                 sample: str = "") -> HTMLResponse:
    return _sources_page(request, ctx, db, principal, chosen=source, sample=sample)


@router.post("/sources", response_class=HTMLResponse)
async def add_source(request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    """The add form: the API's own validation and audit; errors next to their field (422)."""
    from api.routes import settings as settings_api
    from service import runtime_settings as rs

    form = await form_dict(request)
    raw = (await request.form()).get("secret")
    form.pop("secret", None)  # never echoed back into the page
    body, errors = _source_body(form, raw, update=False)
    if body is not None and not errors:
        try:
            made = settings_api.add_source_to(ctx, db, body, admin.name, client_ip(request))
        except rs.SettingsInvalid as exc:
            errors = exc.errors
        else:
            return back(_url("/dash/sources", msg=f"Source {made.name} added" + _when(made)))
    return _sources_page(request, ctx, db, admin, 422, form=form, errors=errors or {"_": "not saved"})


@router.post("/sources/reset", response_class=HTMLResponse)
def reset_sources(request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    from service import runtime_settings as rs

    done = rs.reset_section(ctx, db, rs.SOURCES, actor=admin.name, ip=client_ip(request))
    return back(_url("/dash/sources", msg="Using the config file's sources" if done else "Nothing to reset"))


@router.post("/sources/{name}/edit", response_class=HTMLResponse)
async def edit_source(name: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    from api.routes import settings as settings_api
    from service import runtime_settings as rs

    form = await form_dict(request)
    raw = (await request.form()).get("secret")
    form.pop("secret", None)
    form["name"] = name
    body, errors = _source_body(form, raw, update=True)
    if body is not None and not errors:
        try:
            made = settings_api.update_source_in(ctx, db, name, body, admin.name, client_ip(request))
        except rs.SettingsInvalid as exc:
            errors = exc.errors
        else:
            return back(_url("/dash/sources", msg=f"Source {made.name} saved" + _when(made)))
    return _sources_page(request, ctx, db, admin, 422, form=form, errors=errors or {"_": "not saved"}, edit=name)


@router.post("/sources/{name}/delete")
def delete_source(name: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    from api.routes import settings as settings_api

    settings_api.delete_source_in(ctx, db, name, admin.name, client_ip(request))
    return back(_url("/dash/sources", msg=f"Source {name} deleted"))


def _when(out: Any) -> str:
    return f"; {out.note}" if out.applies == "after_restart" and out.note else "; it applies now"


@router.post("/sources/test", response_class=HTMLResponse)
async def sources_test(request: Request, ctx: Ctx, db: DbSession, principal: Operator) -> HTMLResponse:
    """The "send a test event" button: decode a sample as the chosen source would, store nothing."""
    form = await form_dict(request)
    name, sample = form.get("source", ""), form.get("sample", "")
    decoded = decode_sample(ctx, name, sample)
    return _sources_page(request, ctx, db, principal, status_code=422 if "error" in decoded else 200,
                         chosen=name, sample=sample, decoded=decoded)
