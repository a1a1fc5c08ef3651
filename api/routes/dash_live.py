"""Operator dashboard, the live parts: the overview (polled fragments), white/blacklists, visits.

Same pattern as api/routes/dashboard.py: full pages, or htmx fragments, over the JSON routes' own
functions. The overview's sections are fragments of their own (`/dash/overview/{part}`) that the page
polls every few seconds (paused while focus is inside one) and that an alert from the SSE stream
refreshes at once (dash.js fires `bw:alert` on the body). A visit's timeline picture is an SVG built
here from its timeline entries, so it needs no script.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import quote_plus, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, select
from starlette.datastructures import UploadFile

from api.deps import Ctx, DbSession, Operator, Principal, Viewer
from api.limits import CSV_BODY
from api.pagination import RowIdPath
from api.routes import alerts as alerts_api
from api.routes import bays as bays_api
from api.routes import cameras as cameras_api
from api.routes import enforcement as enf_api
from api.routes import stats as stats_api
from api.routes.dashboard import _evidence, back, field_errors, form_dict, page
from api.stats import as_utc
from models.tables import Alert, ConnectorState, Penalty, PlateReadRow, Presence, Transaction, VisitRow

router = APIRouter(prefix="/dash", include_in_schema=False)

ListName = Literal["whitelist", "blacklist"]
POLL_S = 5  # overview refresh period; an SSE alert refreshes the alert and count sections at once


def _q(text: str) -> str:
    return quote_plus(text)


def _tz(ctx: Any, db: Session) -> ZoneInfo:
    try:
        return ZoneInfo(stats_api.site_timezone(db, ctx.settings))
    except Exception:  # an unreadable rules row must not take the pages down
        return ZoneInfo("UTC")


def fmt_duration(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


# --- overview -------------------------------------------------------------------------------


def _counts(ctx: Any, db: Session) -> tuple[dict[str, int], datetime]:
    tz = _tz(ctx, db)
    day = datetime.combine(ctx.clock().astimezone(tz).date(), time(0), tzinfo=tz)  # the site's today

    def count(model: Any, *where: Any) -> int:
        return int(db.exec(select(func.count()).select_from(model).where(*where)).one())

    counts = {
        "reads": count(PlateReadRow, PlateReadRow.at >= day),
        "visits": count(VisitRow, VisitRow.arrived_at >= day),
        "penalties": count(Penalty, Penalty.created_at >= day),
        "cars": count(VisitRow, VisitRow.departed_at == None),  # noqa: E711
        "alerts": count(Alert, Alert.acknowledged_at == None),  # noqa: E711
    }
    return counts, day


def _bays(ctx: Any, db: Session, principal: Principal) -> list[dict[str, Any]]:
    now, tz = ctx.clock(), _tz(ctx, db)
    out = []
    for bay in bays_api.list_bays(ctx, db, principal):
        live = bay.live
        since = as_utc(live.arrived_at) if live.arrived_at else None
        here = since.astimezone(tz) if since else None
        today = here is not None and here.date() == now.astimezone(tz).date()
        shown = "" if here is None else here.strftime("%H:%M" if today else "%Y-%m-%d %H:%M")
        out.append({"bay": bay, "live": live, "occupied": live.visit_id is not None, "since": since,
                    "since_text": shown, "for": fmt_duration(now - since) if since else ""})
    return out


def _overview_context(part: str, ctx: Any, db: Session, principal: Principal) -> dict[str, Any]:
    if part == "counts":
        counts, day = _counts(ctx, db)
        return {"counts": counts, "day": day}
    if part == "bays":
        return {"bays": _bays(ctx, db, principal)}
    if part == "alerts":
        return {"alerts": alerts_api.list_alerts(db, principal, open_only=True, before_id=None, limit=50)}
    return {"cameras": cameras_api.list_cameras(ctx, db, principal), "recognition": ctx.cameras is not None,
            "with_actions": False}


@router.get("", response_class=HTMLResponse)
def overview(request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> HTMLResponse:
    context: dict[str, Any] = {}
    for part in ("counts", "bays", "alerts", "cameras"):
        context.update(_overview_context(part, ctx, db, principal))
    return page(request, "dash/overview.html", principal, poll_s=POLL_S, **context)


_PARTS = {"counts": "dash/_overview_counts.html", "bays": "dash/_overview_bays.html",
          "alerts": "dash/_overview_alerts.html", "cameras": "dash/_camera_rows.html"}


@router.get("/overview/{part}", response_class=HTMLResponse)
def overview_part(part: Literal["counts", "bays", "alerts", "cameras"], request: Request, ctx: Ctx, db: DbSession,
                  principal: Viewer) -> HTMLResponse:
    """One section of the overview, polled by the page."""
    return page(request, _PARTS[part], principal, **_overview_context(part, ctx, db, principal))


@router.post("/alerts/{alert_id}/ack")
def ack_alert(alert_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    alerts_api.acknowledge(alert_id, request, ctx, db, op)
    return back("/dash")


# --- white/blacklists -----------------------------------------------------------------------

LIST_PAGE = 100
EDIT_FIELDS = ("owner", "reason", "priority", "valid_from", "valid_until")


def _list_page(request: Request, name: ListName, ctx: Any, db: DbSession, principal: Principal, q: str = "",
               status: str = "all", cursor: str = "", status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("form", {"priority": "5"})
    context.setdefault("errors", {})
    now = ctx.clock()
    status = status if status in ("active", "expired", "all") else "all"
    try:
        rows, nxt = enf_api.query_entries(db, name, now, q=q or None, status=status,  # type: ignore[arg-type]
                                          cursor=cursor or None, limit=LIST_PAGE)
    except HTTPException:  # a hand-edited cursor: start again at the first page
        rows, nxt = enf_api.query_entries(db, name, now, q=q or None, status=status,  # type: ignore[arg-type]
                                          limit=LIST_PAGE)
    next_url = None
    if nxt:
        next_url = f"/dash/lists/{name}?" + urlencode({**({"q": q} if q else {}), "status": status, "cursor": nxt})
    return page(request, "dash/list.html", principal, status_code=status_code, list_name=name, q=q, status=status,
                entries=[enf_api.entry_out(r, now) for r in rows], next_url=next_url, **context)


@router.get("/lists/{name}", response_class=HTMLResponse)
def list_page(name: ListName, request: Request, ctx: Ctx, db: DbSession, principal: Viewer, q: str = "",
              status: str = "all", cursor: str = "", msg: str = "", error: str = "") -> HTMLResponse:
    return _list_page(request, name, ctx, db, principal, q=q, status=status, cursor=cursor,
                      message=error or msg, message_is_error=bool(error))


@router.post("/lists/{name}", response_class=HTMLResponse)
async def add_list_entry(name: ListName, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    form = await form_dict(request)
    data = {k: v for k, v in form.items() if k in enf_api.CSV_FIELDS and v != ""}
    try:
        body = enf_api.ListEntryIn.model_validate(data)
    except ValidationError as exc:
        return _list_page(request, name, ctx, db, op, status_code=422, form=form, errors=field_errors(exc))
    enf_api.add_entry(name, body, request, ctx, db, op)
    return back(f"/dash/lists/{name}?msg={_q(body.plate)}+added")


def _edit_form(entry: Any) -> dict[str, str]:
    def text(v: Any) -> str:
        return v.isoformat() if isinstance(v, datetime) else "" if v is None else str(v)

    return {k: text(getattr(entry, k)) for k in ("plate", *EDIT_FIELDS)}


def _get_entry(name: str, entry_id: int, ctx: Any, db: Session) -> enf_api.ListEntryOut:
    return enf_api.entry_out(enf_api._entry(db, name, entry_id), ctx.clock())


@router.get("/lists/{name}/{entry_id}/edit", response_class=HTMLResponse)
def edit_list_entry_page(name: ListName, entry_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession,
                         op: Operator) -> HTMLResponse:
    entry = _get_entry(name, entry_id, ctx, db)
    return _list_page(request, name, ctx, db, op, editing=entry, edit_form=_edit_form(entry), edit_errors={})


@router.post("/lists/{name}/{entry_id}/edit", response_class=HTMLResponse)
async def edit_list_entry(name: ListName, entry_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession,
                          op: Operator) -> Response:
    """Through PATCH /api/v1/lists/{name}/{id}: an empty date clears it; errors come back next to the fields."""
    entry = _get_entry(name, entry_id, ctx, db)
    form = await form_dict(request)
    data: dict[str, Any] = {k: form.get(k, "") for k in EDIT_FIELDS}
    for k in ("valid_from", "valid_until"):
        data[k] = data[k] or None
    errors: dict[str, str] = {}
    try:
        enf_api.update_entry(name, entry_id, enf_api.ListEntryPatch.model_validate(data), request, ctx, db, op)
    except ValidationError as exc:
        errors = field_errors(exc)
    except HTTPException as exc:
        if isinstance(exc.detail, list):
            errors = {str(e["loc"][-1]): str(e["msg"]) for e in exc.detail}
        else:
            errors = {"_": str(exc.detail)}
    if errors:
        return _list_page(request, name, ctx, db, op, status_code=422, editing=entry,
                          edit_form={"plate": entry.plate, **form}, edit_errors=errors)
    return back(f"/dash/lists/{name}?msg={_q(entry.plate)}+saved")


@router.post("/lists/{name}/{entry_id}/expire")
def expire_list_entry(name: ListName, entry_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession,
                      op: Operator) -> Response:
    try:
        entry = enf_api.expire_entry(name, entry_id, request, ctx, db, op)
    except HTTPException as exc:
        if exc.status_code != 409:
            raise
        return back(f"/dash/lists/{name}?error={_q(str(exc.detail))}")
    return back(f"/dash/lists/{name}?msg={_q(entry.plate)}+expired")


@router.post("/lists/{name}/{entry_id}/delete")
def delete_list_entry(name: ListName, entry_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession,
                      op: Operator) -> Response:
    enf_api.delete_entry(name, entry_id, request, ctx, db, op)
    return back(f"/dash/lists/{name}?msg=Entry+deleted")


@router.post("/lists/{name}/import", response_class=HTMLResponse, max_body_size=CSV_BODY)
async def import_list(name: ListName, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    """Step 1 (a file upload): dry run, show preview and per-row errors. Step 2 (`confirm` with the
    CSV text carried in the form): the real import, all rows or none."""
    form = await request.form()
    upload, text = form.get("file"), form.get("csv_text")
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read(enf_api.MAX_CSV_BYTES + 1)
    elif isinstance(text, str) and text:
        raw = text.encode("utf-8")
    else:
        return _list_page(request, name, ctx, db, op, status_code=422, import_error="choose a CSV file to import")
    confirm = form.get("confirm") == "yes"
    csv_file = UploadFile(io.BytesIO(raw), filename="import.csv")
    try:
        result = await enf_api.import_csv(name, request, ctx, db, op, file=csv_file, dry_run=not confirm)
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, str) else exc.detail.get("message", str(exc.detail))
        return _list_page(request, name, ctx, db, op, status_code=422, import_error=detail)
    if confirm:
        return back(f"/dash/lists/{name}?msg={result.imported}+entries+imported")
    return _list_page(request, name, ctx, db, op, result=result, csv_text=raw.decode("utf-8-sig", "replace"))


# --- visits ---------------------------------------------------------------------------------

VISIT_PAGE = 50


@router.get("/visits", response_class=HTMLResponse)
def visits_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, bay_id: str = "", plate: str = "",
                open_only: bool = False, since: str = "", until: str = "", cursor: str = "") -> HTMLResponse:
    """Newest arrival first, keyset pages (`cursor`) like GET /api/v1/visits; dates are site-local days."""
    tz = _tz(ctx, db)
    filters = {"bay_id": bay_id, "plate": plate, "open_only": open_only, "since": since, "until": until}
    errors: dict[str, str] = {}
    bounds: dict[str, datetime | None] = {"since": None, "until": None}
    for key, text in (("since", since), ("until", until)):
        if text:
            try:
                day = date.fromisoformat(text)
            except ValueError:
                errors[key] = "give a date as YYYY-MM-DD"
                continue
            # `until` is inclusive for people: the whole day
            bounds[key] = datetime.combine(day + timedelta(days=1 if key == "until" else 0), time(0), tzinfo=tz)
    if not errors and bounds["since"] and bounds["until"] and bounds["until"] <= bounds["since"]:
        errors["until"] = "must not be before 'from'"
    rows: list[VisitRow] = []
    nxt = None
    if not errors:
        try:
            rows, nxt = enf_api.query_visits(db, bay_id=bay_id or None, plate=plate or None, open_only=open_only,
                                             since=bounds["since"], until=bounds["until"], cursor=cursor or None,
                                             limit=VISIT_PAGE)
        except HTTPException:
            errors["cursor"] = "that page link is no longer valid; start from the first page"
    kept = {k: ("true" if v is True else v) for k, v in filters.items() if v}
    next_url = "/dash/visits?" + urlencode({**kept, "cursor": nxt}) if nxt else None
    first_url = "/dash/visits?" + urlencode(kept) if cursor else None
    visits = [enf_api._visit(db, v, with_penalties=False) for v in rows]
    return page(request, "dash/visits.html", principal, visits=visits, filters=filters, errors=errors,
                next_url=next_url, first_url=first_url, bay_ids=stats_api.bay_ids(db, ctx.settings),
                tz=tz, tz_name=str(tz), status_code=422 if errors else 200)


# The visit's state between timeline entries, for the picture. Entries not named here keep the state.
_STATE_AFTER = {"arrived": "parked", "arrival": "parked", "linked": "plugged", "charging": "charging",
                "suspended": "plugged", "idle": "idle", "idle_end": "plugged", "unplugged": "parked"}
STATES = {  # state: (label, fill, text colour)
    "parked": ("parked, not plugged in", "#9aa5b1", "#1b1f24"),
    "plugged": ("plugged in, not charging", "#7fb2f0", "#1b1f24"),
    "charging": ("charging", "#0b6e4f", "#ffffff"),
    "idle": ("idle (charging done, still plugged)", "#f59e0b", "#1b1f24"),
}
VIOLATION_FILL = "#b00020"
_CHARGER_EVENTS = {"linked", "charging", "suspended", "idle", "idle_end", "transaction_ended", "unplugged",
                   "left_plugged"}


@dataclass
class Strip:
    """Geometry of the timeline picture (x in SVG user units; the SVG scales to its box)."""

    width: int = 960
    left: int = 96
    right: int = 24
    top: int = 26
    bar_h: int = 34
    viol_y: int = 76
    viol_h: int = 18
    axis_y: int = 110
    height: int = 150
    segments: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    open: bool = False
    summary: str = ""

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right


def visit_strip(row: VisitRow, penalties: list[Any], now: datetime, tz: ZoneInfo) -> Strip:
    """Arrival to departure (or now) as coloured state segments, the violation periods under them,
    a marker per timeline entry and times at the state changes."""
    s = Strip()
    start = as_utc(row.arrived_at)
    s.open = row.departed_at is None
    end = as_utc(row.departed_at) if row.departed_at else max(as_utc(now), start)
    span = max((end - start).total_seconds(), 60.0)
    long_visit = span > 20 * 3600

    def x(at: datetime) -> float:
        off = (min(max(at, start), start + timedelta(seconds=span)) - start).total_seconds()
        return round(s.left + s.plot_w * off / span, 1)

    def clock_text(at: datetime) -> str:
        return at.astimezone(tz).strftime("%m-%d %H:%M" if long_visit else "%H:%M")

    timeline = sorted(((as_utc(t["at"]), t) for t in (row.data or {}).get("timeline", []) if t.get("at")),
                      key=lambda p: p[0])
    changes: list[tuple[datetime, str]] = [(start, "parked")]
    for at, t in timeline:
        new = _STATE_AFTER.get(str(t.get("what")))
        if new is not None and start <= at <= end:
            changes.append((at, new))
        s.events.append({"x": x(at), "what": str(t.get("what", "")).replace("_", " "),
                         "title": f"{at.astimezone(tz).strftime('%Y-%m-%d %H:%M:%S')} "
                                  f"{str(t.get('what', '')).replace('_', ' ')} {t.get('detail', '')}".strip(),
                         "charger": t.get("what") in _CHARGER_EVENTS})
    # Several entries at one instant (idle_end then charging): the last one wins.
    merged: list[tuple[datetime, str]] = []
    for at, state in changes:
        if merged and merged[-1][0] == at:
            merged[-1] = (at, state)
        elif not merged or merged[-1][1] != state:
            merged.append((at, state))
    for i, (at, state) in enumerate(merged):
        seg_end = merged[i + 1][0] if i + 1 < len(merged) else end
        if seg_end <= at and len(merged) > 1:
            continue
        x0, x1 = x(at), x(seg_end)
        label, fill, ink = STATES[state]
        s.segments.append({"x": x0, "w": round(max(x1 - x0, 1.0), 1), "state": state, "label": label, "fill": fill,
                           "ink": ink, "short": state if x1 - x0 >= 64 else "",
                           "title": f"{label}: {clock_text(at)} to {clock_text(seg_end)}"
                                    f"{' (now)' if s.open and i + 1 == len(merged) else ''}, "
                                    f"{fmt_duration(seg_end - at)}"})
    seen: set[str] = set()
    violations = [(v.get("violation_id"), v.get("kind"), v.get("started_at"), v.get("ended_at"))
                  for v in (row.data or {}).get("violations", [])]
    violations += [(p.violation_id, p.kind, p.started_at, p.ended_at) for p in penalties]
    for vid, kind, v_start, v_end in violations:
        if not v_start or vid in seen:
            continue
        seen.add(str(vid))
        a, b = as_utc(v_start), as_utc(v_end) if v_end else end
        x0, x1 = x(a), x(b)
        name = str(kind).replace("_", " ")
        s.violations.append({"x": x0, "w": round(max(x1 - x0, 2.0), 1), "kind": kind,
                             "short": name if x1 - x0 >= 70 else "",
                             "title": f"{name} violation: {clock_text(a)} to {clock_text(b)}"
                                      f"{'' if v_end else ' (ongoing)'}, {fmt_duration(b - a)}"})
    # Times at the state changes and at the end; a label too close to the previous one is left out.
    marks = [m[0] for m in merged] + [end]
    last_x = -1000.0
    for i, at in enumerate(marks):
        px = x(at)
        final = i == len(marks) - 1
        if px - last_x < 46:
            if not final:
                continue
            if s.ticks and len(s.ticks) > 1:
                s.ticks.pop()
        text = "now" if final and s.open else clock_text(at)
        s.ticks.append({"x": px, "label": text})
        last_x = px
    parts = [f"{seg['title']}" for seg in s.segments]
    parts += [v["title"] for v in s.violations]
    s.summary = "; ".join(parts)
    return s


def _presences(db: Session, row: VisitRow) -> list[Presence]:
    ids = list(dict.fromkeys([*(row.data or {}).get("presence_ids", []), (row.data or {}).get("presence_id")]))
    out = [db.get(Presence, pid) for pid in ids if pid]
    return [p for p in out if p is not None]


@router.get("/visits/{visit_id:path}", response_class=HTMLResponse)
def visit_page(visit_id: str, request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> HTMLResponse:
    row = db.get(VisitRow, visit_id)
    if row is None:
        return page(request, "dash/visit.html", principal, status_code=404, visit=None, visit_id=visit_id)
    tz = _tz(ctx, db)
    visit = enf_api.get_visit(visit_id, db, principal)
    tx = conn = None
    if row.charge_point_id and row.transaction_id:
        tx = db.get(Transaction, (row.charge_point_id, row.transaction_id))
        if tx is not None and (tx.evse_id is not None or tx.connector_id is not None):
            conn = db.get(ConnectorState, (tx.charge_point_id, tx.evse_id or 0, tx.connector_id or 0))
    timeline = [{**t, "at": as_utc(t["at"])} for t in visit.timeline if t.get("at")]
    return page(request, "dash/visit.html", principal, visit=visit, row=row, tz=tz, tz_name=str(tz),
                strip=visit_strip(row, visit.penalties, ctx.clock(), tz), states=STATES,
                violation_fill=VIOLATION_FILL, presences=_presences(db, row), main_evidence=_evidence(db, row),
                tx=tx, connector=conn, timeline=timeline,
                charger_events=[t for t in timeline if t.get("what") in _CHARGER_EVENTS],
                stay=fmt_duration((as_utc(row.departed_at) if row.departed_at else ctx.clock())
                                  - as_utc(row.arrived_at)))
