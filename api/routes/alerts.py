"""Operator alerts: list, acknowledge, and a Server-Sent Events stream for live pop-ups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import select

from api.deps import Ctx, DbSession, Operator, Viewer, client_ip
from api.pagination import AfterId, RowId, RowIdPath
from models import audit
from models.tables import Alert

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


class AlertOut(BaseModel):
    id: int
    at: datetime
    kind: str
    severity: str
    title: str
    detail: str
    subject: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None


@router.get("", response_model=list[AlertOut])
def list_alerts(db: DbSession, _: Viewer, open_only: bool = False, before_id: RowId = None,
                limit: int = 100) -> list[Alert]:
    q = select(Alert).order_by(Alert.id.desc()).limit(max(1, min(limit, 500)))  # type: ignore[union-attr]
    if open_only:
        q = q.where(Alert.acknowledged_at == None)  # noqa: E711
    if before_id:
        q = q.where(Alert.id < before_id)  # type: ignore[operator]
    return list(db.exec(q))


@router.post("/{alert_id}/ack", response_model=AlertOut)
def acknowledge(alert_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Alert:
    alert = db.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(404, "no such alert")
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = ctx.clock(), op.name
        db.add(alert)
        audit.record(db, actor=op.name, action="acknowledge", entity="alert", entity_id=str(alert_id),
                     after={"acknowledged_by": op.name}, ip=client_ip(request), at=ctx.clock())
        db.commit()
        db.refresh(alert)
    return alert


@router.get("/stream")
async def stream(request: Request, ctx: Ctx, _: Viewer, after_id: AfterId = 0) -> StreamingResponse:
    """SSE: each new alert as `event: alert` with its JSON; a comment every 15 s keeps proxies open.

    Polling the table (every 0.5 s) rather than an in-memory hub means alerts raised by any process
    (or another instance on the same database) reach every open dashboard.
    """

    def newer(last: int) -> list[Alert]:
        with ctx.session() as db:
            q = select(Alert).where(Alert.id > last).order_by(Alert.id).limit(50)  # type: ignore[operator]
            return list(db.exec(q))

    async def events() -> AsyncIterator[str]:
        last = after_id
        if not last:
            with ctx.session() as db:
                top = db.exec(select(Alert.id).order_by(Alert.id.desc()).limit(1)).first()  # type: ignore[union-attr]
                last = top or 0
        idle = 0.0
        yield ": connected\n\n"
        while not await request.is_disconnected():
            rows = await asyncio.to_thread(newer, last)
            for row in rows:
                last = row.id or last
                payload = AlertOut.model_validate(row, from_attributes=True).model_dump(mode="json")
                yield f"id: {row.id}\nevent: alert\ndata: {json.dumps(payload)}\n\n"
            await asyncio.sleep(0.5)
            idle += 0.5
            if idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
