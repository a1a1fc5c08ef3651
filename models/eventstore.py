"""The durable event inbox and the read models it feeds (reads log, presences).

Every domain event, from a local camera worker, an edge worker over HTTP or the OCPP decoder,
goes through `ingest`: stored once by `event_id` (a replay is a no-op), in the caller's transaction.
On PostgreSQL a transaction that stored new events sends `NOTIFY baywarden_inbox` as it commits, so an
engine in another process or instance applies them at once instead of at its next poll.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select as sa_select
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from models.db import insert_rows
from models.events import (
    CameraStateChanged,
    ChargerConnection,
    ChargingIdle,
    ChargingSuspended,
    ConnectorAvailable,
    EventEnvelope,
    PlateRead,
    RelayUpstreamChanged,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
    VehicleArrived,
    VehicleDeparted,
    VehicleStillPresent,
)
from models.tables import Alert, Charger, ConnectorState, PlateReadRow, Presence, StoredEvent, Transaction

INBOX_CHANNEL = "baywarden_inbox"
_NEW = "baywarden_inbox_new"  # session.info flag: this transaction stored new events


@sa_event.listens_for(OrmSession, "before_commit")
def _notify_inbox(session: OrmSession) -> None:
    # Sent inside the transaction, delivered by PostgreSQL at its commit (never for a rollback), one per
    # transaction however many events it stored.
    if session.info.pop(_NEW, False) and session.get_bind().dialect.name == "postgresql":
        session.connection().execute(text(f"NOTIFY {INBOX_CHANNEL}"))


@sa_event.listens_for(OrmSession, "after_rollback")
def _forget_inbox(session: OrmSession) -> None:
    session.info.pop(_NEW, None)


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
    db.info[_NEW] = True
    return True


_VEHICLE = (VehicleArrived, VehicleStillPresent, VehicleDeparted)
_IN_CHUNK = 500


def ingest_batch(db: Session, items: list[tuple[EventEnvelope, str]], *, now: datetime,
                 checked: bool = False, received: list[datetime] | None = None) -> list[bool]:
    """`ingest` for many events (envelope, source) in one go: one query for the ids already stored, one for
    the presences they touch, and the inbox rows, reads log rows and presences written as multi-row
    statements (SQLAlchemy Core; events of other kinds update their read models through the ORM as in
    `ingest`). Whether each was new.

    Unlike `ingest` there is no savepoint per event: an id stored concurrently by another transaction
    fails the statement with IntegrityError, and the caller falls back to `ingest` one by one. `checked`:
    the caller has already looked the ids up in this transaction (one query fewer). `received`: each item's
    own receipt time (requests batched together arrived at different times); default `now` for all."""
    events_t, reads_t, presences_t = (m.__table__ for m in (StoredEvent, PlateReadRow, Presence))  # type: ignore[attr-defined]
    ids = [] if checked else sorted({env.event_id for env, _ in items})
    stored: set[str] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        q = sa_select(events_t.c.event_id).where(events_t.c.event_id.in_(ids[i : i + _IN_CHUNK]))
        stored.update(db.execute(q).scalars())
    presence_ids = sorted({env.event.presence_id for env, _ in items if isinstance(env.event, _VEHICLE)})
    presences: dict[str, dict[str, Any] | None] = dict.fromkeys(presence_ids)
    for i in range(0, len(presence_ids), _IN_CHUNK):
        q = sa_select(presences_t).where(presences_t.c.id.in_(presence_ids[i : i + _IN_CHUNK]))
        presences.update({r["id"]: dict(r) for r in db.execute(q).mappings()})
    out, rows, reads, touched = [], [], [], set()
    for k, (env, source) in enumerate(items):
        if env.event_id in stored:
            out.append(False)
            continue
        stored.add(env.event_id)  # twice in one batch: the second is a replay
        ev = env.event
        rows.append({"event_id": env.event_id, "kind": ev.kind, "at": ev.at,
                     "received_at": received[k] if received is not None else now,
                     "source": source[:64], "payload": ev.model_dump(mode="json")})
        if isinstance(ev, PlateRead):
            reads.append(_read_row(ev))
        elif isinstance(ev, _VEHICLE):
            presences[ev.presence_id] = _presence_row(presences.get(ev.presence_id), ev)
            touched.add(ev.presence_id)
        else:
            _apply(db, ev)
        out.append(True)
    db.flush()  # the ORM read models first (a no-op for outside reads)
    if rows:
        insert_rows(db, events_t, rows)
        db.info[_NEW] = True
    if reads:
        insert_rows(db, reads_t, reads)
    if touched:
        keep = [presences[p] for p in sorted(touched)]
        columns = [c for c in keep[0] if c != "id"]
        insert_rows(db, presences_t, keep, ["id"], columns)
    return out


def _read_row(ev: PlateRead) -> dict[str, Any]:
    return {"at": ev.at, "camera": ev.camera, "bay_id": ev.bay_id, "plate": ev.plate, "raw_text": ev.raw_text[:64],
            "confidence": ev.confidence, "char_confidences": list(ev.char_confidences), "accepted": ev.accepted,
            "reject_reason": ev.reject_reason, "frame_path": ev.evidence.frame_path,
            "crop_path": ev.evidence.crop_path}


def _presence_row(row: dict[str, Any] | None, ev: object) -> dict[str, Any]:
    """A presence row (as a dict) after a vehicle event: the same rules as `_apply`'s."""
    if isinstance(ev, VehicleArrived):
        row = dict(row) if row else {"id": ev.presence_id, "camera": ev.camera, "bay_id": ev.bay_id,
                                     "first_seen": ev.at, "last_seen": ev.at, "departed_at": None}
        row.update(plate=ev.plate, confidence=ev.confidence, char_confidences=list(ev.char_confidences),
                   frame_path=ev.evidence.frame_path, crop_path=ev.evidence.crop_path)
    elif isinstance(ev, VehicleStillPresent):
        row = dict(row) if row else {"id": ev.presence_id, "camera": ev.camera, "bay_id": ev.bay_id, "plate": None,
                                     "confidence": 0.0, "char_confidences": [], "first_seen": ev.since,
                                     "last_seen": ev.at, "departed_at": None, "frame_path": None, "crop_path": None}
        row["last_seen"] = max(row["last_seen"], ev.at)
        if ev.plate and not row["plate"]:
            row.update(plate=ev.plate, confidence=ev.confidence)
    else:
        assert isinstance(ev, VehicleDeparted)
        row = dict(row) if row else {"id": ev.presence_id, "camera": ev.camera, "bay_id": ev.bay_id,
                                     "plate": ev.plate, "confidence": 0.0, "char_confidences": [],
                                     "first_seen": ev.first_seen, "frame_path": None, "crop_path": None}
        row.update(last_seen=ev.last_seen, departed_at=ev.at)
    return row


def _apply(db: Session, ev: object) -> None:
    if _apply_charger(db, ev):
        return
    if isinstance(ev, CameraStateChanged):
        if ev.state == "failed":
            db.add(Alert(at=ev.at, kind="camera_failed", severity="critical", subject=ev.camera,
                         title=f"Camera {ev.camera} failed", detail=ev.detail[:2000]))
    elif isinstance(ev, RelayUpstreamChanged):
        _upstream_alert(db, ev)
    elif isinstance(ev, PlateRead):
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


def _upstream_alert(db: Session, ev: RelayUpstreamChanged) -> None:
    """Down: one critical alert. Up again: the open down alerts of that upstream are closed by the system,
    and an info alert says so (operators who saw the first should see the second)."""
    if not ev.up:
        db.add(Alert(at=ev.at, kind="relay_upstream_down", severity="critical", subject=ev.upstream[:128],
                     title="CSMS unreachable through the relay", detail=ev.detail[:2000]))
        return
    open_rows = db.exec(select(Alert).where(Alert.kind == "relay_upstream_down", Alert.subject == ev.upstream[:128],
                                            Alert.acknowledged_at.is_(None))).all()  # type: ignore[union-attr]
    for row in open_rows:
        row.acknowledged_at, row.acknowledged_by = ev.at, "system"
        db.add(row)
    if open_rows:
        db.add(Alert(at=ev.at, kind="relay_upstream_up", severity="info", subject=ev.upstream[:128],
                     title="CSMS reachable again through the relay", detail=ev.detail[:2000]))


def _touch_charger(db: Session, cp: str, at: datetime) -> None:
    row = db.get(Charger, cp) or Charger(id=cp, last_seen=at)
    row.last_seen = max(row.last_seen, at)
    db.add(row)


def _connector(db: Session, cp: str, evse: int | None, conn: int | None, status: str, tx: str | None,
               at: datetime) -> None:
    key = (cp, evse or 0, conn or 0)
    row = db.get(ConnectorState, key) or ConnectorState(
        charge_point_id=cp, evse_id=key[1], connector_id=key[2], status=status, updated_at=at
    )
    if at >= row.updated_at:  # an offline-queued older message must not overwrite a newer state
        row.status, row.transaction_id, row.updated_at = status, tx, at
    db.add(row)


def _apply_charger(db: Session, ev: object) -> bool:
    """Keep chargers, connectors and transactions current; True when `ev` was a charger event."""
    if isinstance(ev, ChargerConnection):
        row = db.get(Charger, ev.charge_point_id) or Charger(id=ev.charge_point_id, last_seen=ev.at)
        row.connected, row.last_seen = ev.connected, max(row.last_seen, ev.at)
        row.protocol = ev.protocol or row.protocol
        db.add(row)
        return True
    if isinstance(ev, ConnectorAvailable):
        _touch_charger(db, ev.charge_point_id, ev.at)
        _connector(db, ev.charge_point_id, ev.evse_id, ev.connector_id, "Available", None, ev.at)
        return True
    tx_events = TransactionStarted | TransactionUpdated | ChargingSuspended | ChargingIdle | TransactionEnded
    if not isinstance(ev, tx_events):
        return False
    _touch_charger(db, ev.charge_point_id, ev.at)
    tx = db.get(Transaction, (ev.charge_point_id, ev.transaction_id))
    if tx is not None and tx.ended_at is not None:
        if isinstance(ev, TransactionStarted) and ev.at > tx.ended_at:
            _archive(db, tx)  # the id is used again: a new transaction, the finished one kept as it was
            tx = None
        else:
            return True  # a finished transaction is never rewritten (late or repeated messages)
    elif tx is not None and ev.at < tx.started_at and _of_an_archived_run(db, ev):
        return True  # a late message of an earlier transaction that used the same id
    if tx is None:
        tx = Transaction(charge_point_id=ev.charge_point_id, transaction_id=ev.transaction_id, started_at=ev.at,
                         updated_at=ev.at)
    tx.evse_id = ev.evse_id if ev.evse_id is not None else tx.evse_id
    tx.connector_id = ev.connector_id if ev.connector_id is not None else tx.connector_id
    tx.updated_at = max(tx.updated_at, ev.at)
    status = "Charging"
    if isinstance(ev, TransactionStarted):
        tx.started_at = min(tx.started_at, ev.at)
        tx.id_token_hash = ev.id_token_hash or tx.id_token_hash
        tx.charging_state = tx.charging_state or "Started"
    elif isinstance(ev, TransactionUpdated):
        if ev.energy_wh is not None:
            tx.energy_wh = ev.energy_wh
        if ev.charging_state:
            tx.charging_state = ev.charging_state
            if ev.charging_state == "Charging":
                tx.idle_since = None
        status = tx.charging_state or "Charging"
    elif isinstance(ev, ChargingSuspended | ChargingIdle):
        tx.charging_state = "SuspendedEV" if isinstance(ev, ChargingSuspended) else "Idle"
        tx.idle_since = tx.idle_since or ev.at
        status = tx.charging_state
    elif isinstance(ev, TransactionEnded):
        tx.ended_at, tx.end_reason = ev.at, ev.reason[:64]
        tx.energy_wh = ev.energy_wh if ev.energy_wh is not None else tx.energy_wh
        status = "Finishing"
    db.add(tx)
    active = tx.transaction_id if tx.ended_at is None else None
    _connector(db, ev.charge_point_id, tx.evse_id, tx.connector_id, status, active, ev.at)
    return True


def _of_an_archived_run(db: Session, ev: object) -> bool:
    cp, tx_id, at = ev.charge_point_id, ev.transaction_id, ev.at  # type: ignore[attr-defined]
    q = (select(Transaction.ended_at).where(Transaction.charge_point_id == cp)
         .where(Transaction.transaction_id.startswith(f"{tx_id}@")))  # type: ignore[attr-defined]
    return any(ended is not None and ended >= at for ended in db.exec(q))


def _archive(db: Session, tx: Transaction) -> None:
    """Keep a finished transaction under `<id>@<end time>` so that its id can start a new one."""
    assert tx.ended_at is not None
    suffix = "@" + tx.ended_at.strftime("%Y%m%dT%H%M%SZ")
    old = Transaction(**{**tx.model_dump(), "transaction_id": (tx.transaction_id[: 64 - len(suffix)] + suffix)})
    db.delete(tx)
    db.flush()
    db.add(old)
    db.flush()
