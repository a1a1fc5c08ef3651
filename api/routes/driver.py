"""The driver's notice page: reached only through the signed, expiring link in a notice.

It shows the evidence, the visit timeline, the rule and the amount, takes a dispute, and lets the
browser subscribe to push notifications for that plate. No login; the link is the credential.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from api.deps import Ctx, DbSession, client_ip
from api.limits import LOGIN_BODY
from api.routes.evidence import _resolve
from api.templating import render
from enforcement.config import site_rules
from enforcement.wording import NOTICE_TEXTS, RULE_TEXTS, local_time, texts, timeline_line, zone
from models import audit
from models.outbox import PushSubscription
from models.tables import Penalty, Presence, VisitRow
from service import runtime_settings
from service.notify import read_driver_token

router = APIRouter(include_in_schema=False)


def _penalty(ctx: Ctx, db: DbSession, token: str) -> Penalty:
    violation_id = read_driver_token(ctx, token)
    if violation_id is None:
        raise HTTPException(404, "this link is not valid or has expired")
    p = db.get(Penalty, violation_id)
    if p is None:
        raise HTTPException(404, "this notice no longer exists")
    return p


@router.get("/notice/{token}", response_class=HTMLResponse)
def notice(token: str, request: Request, ctx: Ctx, db: DbSession, done: str = "") -> HTMLResponse:
    p = _penalty(ctx, db, token)
    visit = db.get(VisitRow, p.visit_id)
    timeline = visit.data.get("timeline", []) if visit else []
    tz = zone(site_rules(db, ctx.settings.enforcement).schedule.timezone)
    lang = runtime_settings.effective_site(ctx, db).language  # the site's language, as its e-mails
    return render(request, "notice.html", p=p, visit=visit, timeline=timeline, token=token, page_lang=lang,
                  t=texts(NOTICE_TEXTS, lang), rule=texts(RULE_TEXTS, lang).get(p.kind, p.kind), done=done,
                  when=lambda at: local_time(at, tz, lang=lang),
                  say=lambda what, detail: timeline_line(what, detail, lang),
                  vapid_public_key=ctx.settings.notifications.vapid_public_key or "")


@router.get("/notice/{token}/evidence")
def notice_evidence(token: str, ctx: Ctx, db: DbSession) -> FileResponse:
    p = _penalty(ctx, db, token)
    visit = db.get(VisitRow, p.visit_id)
    presence = db.get(Presence, visit.data.get("presence_id", "")) if visit else None
    if presence is None or not presence.crop_path:
        raise HTTPException(404, "no image was kept for this visit")
    path = _resolve(ctx.settings.evidence_dir, presence.crop_path)
    if not path.is_file():
        raise HTTPException(404, "the image has passed its retention period")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.post("/notice/{token}/dispute", max_body_size=LOGIN_BODY)
def dispute(token: str, request: Request, ctx: Ctx, db: DbSession,
            reason: Annotated[str, Form(min_length=1, max_length=2000)]) -> Response:
    p = _penalty(ctx, db, token)
    if p.state != "notice_issued":
        raise HTTPException(409, f"this notice is {p.state.replace('_', ' ')} and cannot be disputed")
    if not reason.strip():
        raise HTTPException(422, "please say why you dispute this notice")
    before = {"state": p.state}
    p.state, p.note, p.updated_at = "disputed", reason.strip(), ctx.clock()
    db.add(p)
    audit.record(db, actor=f"driver:{p.plate}", action="penalty_dispute", entity="penalty",
                 entity_id=p.violation_id, before=before, after={"state": "disputed", "note": p.note},
                 ip=client_ip(request), at=ctx.clock())
    db.commit()
    return RedirectResponse(f"/notice/{token}?done=disputed", status_code=303)


class PushKeys(BaseModel):
    p256dh: str = Field(min_length=16, max_length=200)
    auth: str = Field(min_length=8, max_length=64)


class PushSubscribe(BaseModel):
    endpoint: str = Field(min_length=12, max_length=1000, pattern=r"^https://")
    keys: PushKeys


@router.post("/notice/{token}/push", status_code=201, max_body_size=LOGIN_BODY)
def subscribe(token: str, body: PushSubscribe, ctx: Ctx, db: DbSession) -> dict[str, str]:
    p = _penalty(ctx, db, token)
    if not p.plate:
        raise HTTPException(409, "this notice has no plate to subscribe to")
    from sqlmodel import select

    row = db.exec(select(PushSubscription).where(PushSubscription.endpoint == body.endpoint)).first()
    if row is None:
        row = PushSubscription(endpoint=body.endpoint, p256dh=body.keys.p256dh, auth=body.keys.auth, owner=p.plate,
                               created_at=ctx.clock())
    row.expired_at = None
    db.add(row)
    db.commit()
    return {"id": row.id}
