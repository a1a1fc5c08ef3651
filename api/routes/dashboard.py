"""Operator dashboard: server-rendered pages (Jinja2 + htmx) over the same functions as the JSON API.

Every page renders the full layout for a normal request and only its main content when htmx asks
(`HX-Request`), so boosted links and forms swap `<main>` without a SPA. Actions call the JSON
routes' own functions (validation, audit, notifications stay in one place) and then redirect (PRG).
"""

from __future__ import annotations

import io
from datetime import datetime, time
from typing import Any, Literal
from urllib.parse import quote_plus, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import select
from starlette.datastructures import UploadFile

from api.deps import Ctx, DbSession, Operator, Principal, Viewer
from api.routes import alerts as alerts_api
from api.routes import audit as audit_api
from api.routes import cameras as cameras_api
from api.routes import csms as csms_api
from api.routes import enforcement as enf_api
from api.templating import render
from models.tables import Penalty, PlateReadRow, Presence, Role, VisitRow

router = APIRouter(prefix="/dash", include_in_schema=False)

ListName = Literal["whitelist", "blacklist"]


def page(request: Request, name: str, principal: Principal, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render `name`: the whole page, or just its main content for an htmx request."""
    context.setdefault("fragment", request.headers.get("hx-request") == "true")
    context.setdefault("can_edit", principal.role.allows(Role.operator))
    context.setdefault("is_admin", principal.role.allows(Role.admin))
    return render(request, name, status_code=status_code, **context)


def back(url: str) -> RedirectResponse:
    """Post/redirect/get; htmx follows the redirect and swaps in the fragment."""
    return RedirectResponse(url, status_code=303)


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic errors keyed by the first field of their location, for messages next to inputs."""
    out: dict[str, str] = {}
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else "_"
        out.setdefault(key, str(err["msg"]).removeprefix("Value error, "))
    return out


def _q(text: str) -> str:
    return quote_plus(text)


async def form_dict(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


# --- overview -------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def overview(request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> HTMLResponse:
    now = ctx.clock()
    day = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)

    def count(model: Any, column: Any) -> int:
        return int(db.exec(select(func.count()).select_from(model).where(column >= day)).one())

    counts = {
        "reads": count(PlateReadRow, PlateReadRow.at),
        "visits": count(VisitRow, VisitRow.arrived_at),
        "penalties": count(Penalty, Penalty.created_at),
    }
    return page(request, "dash/overview.html", principal, counts=counts, day=day,
                cameras=cameras_api.list_cameras(ctx, db, principal),
                alerts=alerts_api.list_alerts(db, principal, open_only=True, before_id=None, limit=50))


@router.post("/alerts/{alert_id}/ack")
def ack_alert(alert_id: int, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    alerts_api.acknowledge(alert_id, request, ctx, db, op)
    return back("/dash")


# --- cameras --------------------------------------------------------------------------------


def _cameras_page(request: Request, ctx: Ctx, db: DbSession, principal: Principal, status_code: int = 200,
                  **context: Any) -> HTMLResponse:
    context.setdefault("form", {"fps": "5", "enabled": "on"})
    context.setdefault("errors", {})
    return page(request, "dash/cameras.html", principal, status_code=status_code,
                cameras=cameras_api.list_cameras(ctx, db, principal),
                recognition=ctx.cameras is not None, **context)


@router.get("/cameras", response_class=HTMLResponse)
def cameras_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, msg: str = "") -> HTMLResponse:
    return _cameras_page(request, ctx, db, principal, message=msg)


@router.post("/cameras", response_class=HTMLResponse)
async def add_camera(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    form = await form_dict(request)
    data: dict[str, Any] = {"name": form.get("name", ""), "url": form.get("url", ""),
                            "enabled": form.get("enabled") == "on", "fps": form.get("fps") or "5"}
    if form.get("sub_url"):
        data["sub_url"] = form["sub_url"]
    try:
        body = cameras_api.CameraCreate.model_validate(data)
        await cameras_api.add_camera(body, request, ctx, db, op)
    except ValidationError as exc:
        return _cameras_page(request, ctx, db, op, 422, form=form, errors=field_errors(exc))
    except HTTPException as exc:
        return _cameras_page(request, ctx, db, op, 422, form=form, errors={"name": str(exc.detail)})
    return back(f"/dash/cameras?msg=Camera+{_q(body.name)}+added")


@router.get("/cameras/status", response_class=HTMLResponse)
def cameras_status(request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> HTMLResponse:
    """The status table alone, polled by the cameras page."""
    return page(request, "dash/_camera_rows.html", principal, cameras=cameras_api.list_cameras(ctx, db, principal),
                recognition=ctx.cameras is not None, with_actions=True)


_DONE = {"start": "started", "stop": "stopped"}


@router.post("/cameras/{name}/{action}", response_class=HTMLResponse)
async def control_camera(name: str, action: Literal["start", "stop"], request: Request, ctx: Ctx, db: DbSession,
                         op: Operator) -> Response:
    try:
        await cameras_api.control_camera(name, action, request, ctx, db, op)
    except HTTPException as exc:
        return _cameras_page(request, ctx, db, op, 422, message=str(exc.detail), message_is_error=True)
    return back(f"/dash/cameras?msg=Camera+{_q(name)}+{_DONE[action]}")


@router.post("/recognition/{action}", response_class=HTMLResponse)
async def control_all(action: Literal["start", "stop"], request: Request, ctx: Ctx, db: DbSession,
                      op: Operator) -> Response:
    try:
        await cameras_api.control_all(action, request, ctx, db, op)
    except HTTPException as exc:
        return _cameras_page(request, ctx, db, op, 422, message=str(exc.detail), message_is_error=True)
    return back(f"/dash/cameras?msg=All+cameras+{_DONE[action]}")


# --- white/blacklists -----------------------------------------------------------------------


def _list_page(request: Request, name: ListName, db: DbSession, principal: Principal, q: str = "",
               status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("form", {"priority": "5"})
    context.setdefault("errors", {})
    return page(request, "dash/list.html", principal, status_code=status_code, list_name=name, q=q,
                entries=enf_api.list_entries(name, db, principal, q=q or None), **context)


@router.get("/lists/{name}", response_class=HTMLResponse)
def list_page(name: ListName, request: Request, db: DbSession, principal: Viewer, q: str = "",
              msg: str = "") -> HTMLResponse:
    return _list_page(request, name, db, principal, q=q, message=msg)


@router.post("/lists/{name}", response_class=HTMLResponse)
async def add_list_entry(name: ListName, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    form = await form_dict(request)
    data = {k: v for k, v in form.items() if k in enf_api.CSV_FIELDS and v != ""}
    try:
        body = enf_api.ListEntryIn.model_validate(data)
    except ValidationError as exc:
        return _list_page(request, name, db, op, status_code=422, form=form, errors=field_errors(exc))
    enf_api.add_entry(name, body, request, ctx, db, op)
    return back(f"/dash/lists/{name}?msg={_q(body.plate)}+added")


@router.post("/lists/{name}/{entry_id}/delete")
def delete_list_entry(name: ListName, entry_id: int, request: Request, ctx: Ctx, db: DbSession,
                      op: Operator) -> Response:
    enf_api.delete_entry(name, entry_id, request, ctx, db, op)
    return back(f"/dash/lists/{name}?msg=Entry+deleted")


@router.post("/lists/{name}/import", response_class=HTMLResponse)
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
        return _list_page(request, name, db, op, status_code=422, import_error="choose a CSV file to import")
    confirm = form.get("confirm") == "yes"
    csv_file = UploadFile(io.BytesIO(raw), filename="import.csv")
    try:
        result = await enf_api.import_csv(name, request, ctx, db, op, file=csv_file, dry_run=not confirm)
    except HTTPException as exc:
        detail = exc.detail if isinstance(exc.detail, str) else exc.detail.get("message", str(exc.detail))
        return _list_page(request, name, db, op, status_code=422, import_error=detail)
    if confirm:
        return back(f"/dash/lists/{name}?msg={result.imported}+entries+imported")
    return _list_page(request, name, db, op, result=result, csv_text=raw.decode("utf-8-sig", "replace"))


# --- penalties review -----------------------------------------------------------------------


def _evidence(db: DbSession, visit: VisitRow | None) -> str | None:
    """The crop (else frame) of the visit's presence, as a path under /api/v1/evidence/."""
    if visit is None:
        return None
    ids = [visit.data.get("presence_id"), *reversed(visit.data.get("presence_ids") or [])]
    for pid in ids:
        pres = db.get(Presence, pid) if pid else None
        if pres is not None and (pres.crop_path or pres.frame_path):
            return pres.crop_path or pres.frame_path
    return None


@router.get("/penalties", response_class=HTMLResponse)
def penalties_page(request: Request, db: DbSession, principal: Viewer, state: str = "pending_review",
                   msg: str = "", error: str = "") -> HTMLResponse:
    items = []
    for p in enf_api.list_penalties(db, principal, state=state or None, plate=None, limit=100):
        visit = db.get(VisitRow, p.visit_id)
        items.append({"p": p, "evidence": _evidence(db, visit),
                      "timeline": list(visit.data.get("timeline", [])) if visit else []})
    return page(request, "dash/penalties.html", principal, items=items, state=state, message=msg, error=error,
                states=["pending_review", "violation", "notice_issued", "disputed", "paid", "waived"])


@router.post("/penalties/{violation_id:path}/{action}")
async def act_on_penalty(violation_id: str, action: Literal["issue", "waive"], request: Request, ctx: Ctx,
                         db: DbSession, op: Operator) -> Response:
    form = await form_dict(request)
    try:
        body = enf_api.PenaltyAction(note=form.get("note", ""), plate=form.get("plate") or None)
        if action == "issue" and not body.plate:
            raise HTTPException(422, "type the plate as read on the evidence image to confirm it")
        enf_api.act_on_penalty(violation_id, action, body, request, ctx, db, op)
    except (HTTPException, ValidationError) as exc:
        detail = str(exc.detail) if isinstance(exc, HTTPException) else next(iter(field_errors(exc).values()))
        return back(f"/dash/penalties?error={_q(detail)}")
    done = "issued" if action == "issue" else "waived"
    return back(f"/dash/penalties?msg=Penalty+{done}")


# --- reads log ------------------------------------------------------------------------------


@router.get("/reads", response_class=HTMLResponse)
def reads_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer, camera: str = "", plate: str = "",
               fuzzy: str = "", since: str = "", until: str = "", min_conf: str = "", accepted: str = "",
               cursor: str = "", limit: int = 50) -> HTMLResponse:
    """Newest first, through api/reads.py like GET /api/v1/reads; `cursor` pages stay stable under inserts."""
    from api import reads as reads_q

    limit = max(1, min(limit, reads_q.MAX_LIMIT))
    filters = {"camera": camera, "plate": plate, "fuzzy": fuzzy, "since": since, "until": until,
               "min_conf": min_conf, "accepted": accepted}
    errors: dict[str, str] = {}
    result = reads_q.ReadPage(rows=[], next=None)
    try:
        # datetime-local inputs carry no zone: they are the operator's wall clock, taken as the server's.
        f = reads_q.parse_form(filters, local_tz=datetime.now().astimezone().tzinfo)
        start = reads_q.Cursor.decode(cursor) if cursor else None
    except reads_q.FilterError as exc:
        errors = exc.errors
    else:
        reads_q.prime(db)
        result = reads_q.fetch(db, f, start, limit)
    next_url = None
    if result.next is not None:
        next_url = "/dash/reads?" + urlencode({**{k: v for k, v in filters.items() if v},
                                               "cursor": result.next.encode(), "limit": limit})
    cams = sorted({c.name for c in cameras_api.list_cameras(ctx, db, principal)} | ({camera} if camera else set()))
    return page(request, "dash/reads.html", principal, rows=result.rows, filters=filters, errors=errors,
                next_url=next_url, camera_names=cams, matched_plates=result.matched_plates,
                matched_truncated=result.matched_truncated,
                status_code=422 if errors else 200)



# --- visits, chargers, audit (read-only; outbox and users are in dash_admin.py) ---------------


@router.get("/visits", response_class=HTMLResponse)
def visits_page(request: Request, db: DbSession, principal: Viewer, bay_id: str = "", plate: str = "",
                open_only: bool = False) -> HTMLResponse:
    visits = enf_api.list_visits(db, principal, bay_id=bay_id or None, plate=plate or None, open_only=open_only,
                                 limit=100)
    return page(request, "dash/visits.html", principal, visits=visits,
                filters={"bay_id": bay_id, "plate": plate, "open_only": open_only})


@router.get("/chargers", response_class=HTMLResponse)
def chargers_page(request: Request, db: DbSession, principal: Viewer) -> HTMLResponse:
    return page(request, "dash/chargers.html", principal, chargers=csms_api.list_chargers(db, principal))


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, db: DbSession, principal: Operator, entity: str = "", actor: str = "",
               before_id: int | None = None) -> HTMLResponse:
    limit = 50
    rows = audit_api.list_audit(db, principal, entity=entity or None, actor=actor or None, since=None,
                                before_id=before_id, limit=limit)
    next_url = None
    if len(rows) == limit:
        next_url = "/dash/audit?" + urlencode({**{k: v for k, v in (("entity", entity), ("actor", actor)) if v},
                                               "before_id": rows[-1].id})
    return page(request, "dash/audit.html", principal, rows=rows, filters={"entity": entity, "actor": actor},
                next_url=next_url)
