"""Writing the audit log: one helper so every change is recorded the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from models.base import utcnow
from models.tables import AuditLog

# Fields never copied into the audit log.
_SECRET_FIELDS = {"password", "password_hash", "secret", "token", "secret_key", "smtp_password"}


def snapshot(obj: Any) -> dict[str, Any]:
    """A JSON-safe dict of a model's fields, secrets left out."""
    data = obj.model_dump(mode="json") if hasattr(obj, "model_dump") else dict(obj)
    return {k: ("***" if k in _SECRET_FIELDS else v) for k, v in data.items()}


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    ip: str = "",
    at: datetime | None = None,
) -> AuditLog:
    """Add an audit row to the caller's transaction (committed with the change it describes)."""
    row = AuditLog(
        at=at or utcnow(),
        actor=actor,
        action=action,
        entity=entity,
        entity_id=entity_id,
        before=before,
        after=after,
        ip=ip,
    )
    session.add(row)
    return row
