"""Authenticated event intake: edge camera workers (and scripts) post domain events here."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from api.deps import Ctx, DbSession, EventPoster
from models.events import EventEnvelope, event_subject
from models.eventstore import ingest

router = APIRouter(prefix="/api/v1/events", tags=["events"])


class EventBatch(BaseModel):
    events: list[EventEnvelope] = Field(min_length=1, max_length=500)


class IngestResult(BaseModel):
    accepted: int
    duplicates: int


@router.post("", response_model=IngestResult)
async def post_events(batch: EventBatch, ctx: Ctx, db: DbSession, principal: EventPoster) -> IngestResult:
    """Store a batch atomically; events already stored (same `event_id`) are counted, not repeated.

    A device token posts only for the cameras and chargers in its scopes: one event outside them refuses
    the whole batch (403), storing nothing.
    """
    for i, env in enumerate(batch.events):
        subject = event_subject(env.event)
        if not principal.may_post_for(subject):
            what = subject or f"{env.event.kind} events"
            raise HTTPException(403, f"events[{i}]: this token may not post for {what}")
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
