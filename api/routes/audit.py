"""Reading the audit log (operators and admins; viewers see the dashboard, not who changed what)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from sqlmodel import select

from api.deps import DbSession, Operator
from api.pagination import RowId, SaneTime
from models.tables import AuditLog, AuditLogPublic

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditLogPublic])
def list_audit(
    db: DbSession,
    _: Operator,
    entity: str | None = None,
    actor: str | None = None,
    since: Annotated[datetime | None, SaneTime] = None,
    before_id: RowId = None,
    limit: int = 100,
) -> list[AuditLog]:
    """Newest first; page with `before_id` = the last id of the previous page (keyset pagination)."""
    q = select(AuditLog).order_by(AuditLog.id.desc()).limit(max(1, min(limit, 500)))  # type: ignore[union-attr]
    if entity:
        q = q.where(AuditLog.entity == entity)
    if actor:
        q = q.where(AuditLog.actor == actor)
    if since:
        q = q.where(AuditLog.at >= since)
    if before_id:
        q = q.where(AuditLog.id < before_id)  # type: ignore[operator]
    return list(db.exec(q))
