"""Operator dashboard: server-rendered pages (Jinja2 + htmx) over the same functions as the JSON API.

Every page renders the full layout for a normal request and only its main content when htmx asks
(`HX-Request`), so boosted links and forms swap `<main>` without a SPA. Actions call the JSON
routes' own functions (validation, audit, notifications stay in one place) and then redirect (PRG).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote_plus, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import func, select

from api.deps import Ctx, DbSession, Operator, Principal, Viewer
from api.pagination import RowId
from api.routes import audit as audit_api
from api.routes import cameras as cameras_api
from api.routes import csms as csms_api
from api.routes import enforcement as enf_api
from api.templating import render
from models.tables import Penalty, Permission, Presence, VisitRow

router = APIRouter(prefix="/dash", include_in_schema=False)


def page(request: Request, name: str, principal: Principal, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render `name`: the whole page, or just its main content for an htmx request."""
    context.setdefault("fragment", request.headers.get("hx-request") == "true")
    context.setdefault("can_edit", principal.can(Permission.operate))
    context.setdefault("is_admin", principal.can(Permission.administer))
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
    # How many penalties each state holds: an empty state then says where the others are.
    counts = dict(db.exec(select(Penalty.state, func.count()).group_by(Penalty.state)).all())  # type: ignore[arg-type]
    return page(request, "dash/penalties.html", principal, items=items, state=state, message=msg, error=error,
                states=["pending_review", "violation", "notice_issued", "disputed", "paid", "waived"],
                counts=counts)


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


@router.get("/chargers", response_class=HTMLResponse)
def chargers_page(request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> HTMLResponse:
    s = ctx.settings
    return page(request, "dash/chargers.html", principal, chargers=csms_api.list_chargers(db, principal),
                relay_on=s.components.relay, relay_at=f"{s.relay.host}:{s.relay.port}",
                intakes=len(s.csms_intakes))


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, db: DbSession, principal: Operator, entity: str = "", actor: str = "",
               before_id: RowId = None) -> HTMLResponse:
    limit = 50
    rows = audit_api.list_audit(db, principal, entity=entity or None, actor=actor or None, since=None,
                                before_id=before_id, limit=limit)
    next_url = None
    if len(rows) == limit:
        next_url = "/dash/audit?" + urlencode({**{k: v for k, v in (("entity", entity), ("actor", actor)) if v},
                                               "before_id": rows[-1].id})
    return page(request, "dash/audit.html", principal, rows=rows, filters={"entity": entity, "actor": actor},
                next_url=next_url)
