"""The notification outbox for operators: state, retries, dead letters, resend; the test e-mail."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from api.deps import Ctx, DbSession, Operator, client_ip
from api.pagination import Offset
from enforcement.outbox import count_by_state, enqueue, list_messages, resend
from models import audit
from models.outbox import OutboxMessage, OutboxMessagePublic, OutboxState
from service import runtime_settings

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/outbox", response_model=list[OutboxMessagePublic])
def outbox(db: DbSession, _: Operator, state: OutboxState | None = None, limit: int = Query(100, ge=1, le=500),
           offset: Offset = 0) -> list[OutboxMessage]:
    return list_messages(db, states=[state] if state else None, limit=limit, offset=offset)


@router.get("/outbox/counts")
def outbox_counts(db: DbSession, _: Operator) -> dict[str, int]:
    return {k.value: v for k, v in count_by_state(db).items()}


@router.post("/outbox/{message_id}/resend", response_model=OutboxMessagePublic)
def resend_message(message_id: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> OutboxMessage:
    try:
        row = resend(db, message_id, now=ctx.clock())
    except LookupError:
        raise HTTPException(404, "no such message") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    audit.record(db, actor=op.name, action="resend", entity="outbox", entity_id=message_id,
                 after={"state": "pending"}, ip=client_ip(request), at=ctx.clock())
    db.commit()
    db.refresh(row)
    return row


class TestEmail(BaseModel):
    to: str = Field(..., max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@router.post("/settings/test-email", response_model=OutboxMessagePublic, status_code=202)
def test_email(body: TestEmail, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> OutboxMessage:
    """Queue a test e-mail through the configured mail server (watch its state in the outbox)."""
    # The mail server and site as they are now (settings page edits included), not as the service started.
    if runtime_settings.effective_mail(ctx, db) is None:
        raise HTTPException(409, "no mail server is configured (the settings page or the `mail:` section)")
    now = ctx.clock()
    site = runtime_settings.site_name(ctx, db)
    row = enqueue(db, idempotency_key=f"test-email:{op.name}:{now.isoformat()}", channel="email", recipient=body.to,
                  template="test_email", subject=f"Baywarden test e-mail from {site}",
                  context={"site": site, "requested_by": op.name, "sent_at": now.isoformat()},
                  now=now)
    audit.record(db, actor=op.name, action="test_email", entity="outbox", entity_id=row.id, after={"to": body.to},
                 ip=client_ip(request), at=now)
    db.commit()
    db.refresh(row)
    return row
