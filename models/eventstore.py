"""The durable event inbox and the read models it feeds (reads log, presences).

Every domain event, from a local camera worker, an edge worker over HTTP or the OCPP decoder,
goes through `ingest`: stored once by `event_id` (a replay is a no-op), in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models.events import (
    EventEnvelope,
    PlateRead,
    VehicleArrived,
    VehicleDeparted,
    VehicleStillPresent,
)
from models.tables import PlateReadRow, Presence, StoredEvent


def ingest(db: Session, envelope: EventEnvelope, *, source: str, now: datetime) -> bool:
    """Store one event and update the read models; False when this event id was already stored."""
    if db.exec(select(StoredEvent.seq).where(StoredEvent.event_id == envelope.event_id)).first() is not None:
        return False
    ev = envelope.event
    try:
        with db.begin_nested():
            db.add(
                StoredEvent(
                    event_id=envelope.event_id,
                    kind=ev.kind,
                    at=ev.at,
                    received_at=now,
                    source=source[:64],
                    payload=ev.model_dump(mode="json"),
                )
            )
            _apply(db, ev)
            db.flush()
    except IntegrityError:
        return False  # the same id arrived concurrently through another path
    return True


def _apply(db: Session, ev: object) -> None:
    if isinstance(ev, PlateRead):
        db.add(
            PlateReadRow(
                at=ev.at, camera=ev.camera, bay_id=ev.bay_id, plate=ev.plate, raw_text=ev.raw_text[:64],
                confidence=ev.confidence, char_confidences=list(ev.char_confidences), accepted=ev.accepted,
                reject_reason=ev.reject_reason, frame_path=ev.evidence.frame_path, crop_path=ev.evidence.crop_path,
            )
        )
    elif isinstance(ev, VehicleArrived):
        row = db.get(Presence, ev.presence_id) or Presence(
            id=ev.presence_id, camera=ev.camera, bay_id=ev.bay_id, first_seen=ev.at, last_seen=ev.at
        )
        row.plate, row.confidence, row.char_confidences = ev.plate, ev.confidence, list(ev.char_confidences)
        row.frame_path, row.crop_path = ev.evidence.frame_path, ev.evidence.crop_path
        db.add(row)
    elif isinstance(ev, VehicleStillPresent):
        row = db.get(Presence, ev.presence_id)
        if row is None:  # heartbeat for a presence we never saw arrive (e.g. inbox purged): start it here
            row = Presence(id=ev.presence_id, camera=ev.camera, bay_id=ev.bay_id, first_seen=ev.since, last_seen=ev.at)
        row.last_seen = max(row.last_seen, ev.at)
        if ev.plate and not row.plate:
            row.plate, row.confidence = ev.plate, ev.confidence
        db.add(row)
    elif isinstance(ev, VehicleDeparted):
        row = db.get(Presence, ev.presence_id) or Presence(
            id=ev.presence_id, camera=ev.camera, bay_id=ev.bay_id, plate=ev.plate, first_seen=ev.first_seen,
            last_seen=ev.last_seen,
        )
        row.last_seen, row.departed_at = ev.last_seen, ev.at
        db.add(row)
