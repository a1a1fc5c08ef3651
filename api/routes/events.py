"""Authenticated event intake: edge camera workers (and scripts) post domain events here."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from api.deps import Ctx, DbSession, Device
from models.events import EventEnvelope
from models.eventstore import ingest

router = APIRouter(prefix="/api/v1/events", tags=["events"])


class EventBatch(BaseModel):
    events: list[EventEnvelope] = Field(min_length=1, max_length=500)


class IngestResult(BaseModel):
    accepted: int
    duplicates: int


@router.post("", response_model=IngestResult)
async def post_events(batch: EventBatch, ctx: Ctx, db: DbSession, principal: Device) -> IngestResult:
    """Store a batch atomically; events already stored (same `event_id`) are counted, not repeated."""
    accepted = duplicates = 0
    now = ctx.clock()
    try:
        for env in batch.events:
            if ingest(db, env, source=principal.name, now=now):
                accepted += 1
            else:
                duplicates += 1
        db.commit()
    except Exception:
        db.rollback()
        raise HTTPException(503, "events could not be stored; retry later") from None
    for env in batch.events:
        await ctx.publish(env)
    return IngestResult(accepted=accepted, duplicates=duplicates)
