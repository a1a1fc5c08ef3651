"""Outside sources at run time: reads become the same domain events our camera workers produce, stored
through the event inbox in the request's transaction; derived presences (`sources.presence`) live in
`source_presences`, one row per bay, locked while a read for that bay is applied."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from models.db import insert_rows
from models.events import EventEnvelope, Evidence
from models.eventstore import ingest, ingest_batch
from models.files import write_once
from models.settings import SourceSettings
from models.tables import SourceCounter, SourcePresence, StoredEvent, Transaction
from sources.formats import camera_ids
from sources.presence import Held, expire, on_read, unplugged
from sources.reads import OutsideRead, SourceError

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 8 * 1024 * 1024


class RateLimiter:
    """A token bucket per source (this instance): `burst` at once, then `max_per_s`. One source's flood
    is refused on its own; the others keep their own buckets."""

    def __init__(self, clock: Any = None) -> None:
        import threading
        import time

        self._clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, source: SourceSettings) -> float:
        """0 when the request may go on, else the seconds to wait (Retry-After)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(source.name, (float(source.burst), now))
            tokens = min(float(source.burst), tokens + (now - at) * source.max_per_s)
            if tokens >= 1.0:
                self._buckets[source.name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[source.name] = (tokens, now)
            return (1.0 - tokens) / source.max_per_s


LIMITS = RateLimiter()


def find_source(ctx: Any, name: str, db: Session | None = None) -> SourceSettings | None:
    """The source named so in the effective list (stored edits over the file's `sources:`), read now."""
    from service.runtime_settings import find_source as effective

    return effective(ctx, name, db)


_BAYS: dict[int, tuple[object, dict[str, str]]] = {}  # id(source.cameras) -> (that list, camera id -> bay)


def bay_for(source: SourceSettings, read: OutsideRead) -> str | None:
    # The map is made once per cameras list (sources are cached and replaced, not changed in place), not
    # per read: a source maps up to 500 cameras and intakes take hundreds of reads a second.
    cached = _BAYS.get(id(source.cameras))
    if cached is None or cached[0] is not source.cameras:
        if len(_BAYS) > 256:
            _BAYS.clear()
        cached = (source.cameras, {c.id: c.bay_id for c in source.cameras})
        _BAYS[id(source.cameras)] = cached
    ids = cached[1]
    return next((ids[i] for i in camera_ids(read) if i in ids), None)


def _held(row: SourcePresence | None) -> Held | None:
    if row is None:
        return None
    return Held(source=row.source, camera=row.camera, presence_id=row.presence_id, plate=row.plate,
                confidence=row.confidence, first_seen=row.first_seen, last_seen=row.last_seen)


def _lock_presence(db: Session, bay_id: str) -> SourcePresence | None:
    q = select(SourcePresence).where(SourcePresence.bay_id == bay_id)
    if db.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return db.exec(q).first()


def save_image(evidence_dir: Path, source: str, read: OutsideRead) -> Evidence:
    """The read's pictures as evidence (0640, never overwritten): scene as frame, plate as crop."""
    paths: dict[str, str] = {}
    for what, data in (("frame", read.image), ("crop", read.crop)):
        if not data:
            continue
        if len(data) > MAX_IMAGE_BYTES or not data.startswith(b"\xff\xd8"):
            raise SourceError("pictures must be JPEG images of at most 8 MiB")
        rel = Path("sources") / source / read.at.strftime("%Y-%m-%d") / f"{read.message_id[:64]}-{what}.jpg"
        write_once(Path(evidence_dir) / rel, data)  # a replay of the same read finds its first copy
        paths[f"{what}_path"] = rel.as_posix()
    return Evidence(**paths)


@dataclass(frozen=True)
class Prepared:
    """A read checked against its source and its pictures saved: what remains is database work."""

    read: OutsideRead
    bay: str
    camera: str
    evidence: Evidence


def prepare_reads(source: SourceSettings, reads: list[OutsideRead], evidence_dir: Path) -> list[Prepared]:
    """Map each read to its bay and save its pictures (file work, outside any transaction). Raises
    SourceError for an unmapped camera or a picture that is not a JPEG of at most 8 MiB."""
    out = []
    for read in reads:
        bay = bay_for(source, read)
        if bay is None:
            raise SourceError(f"camera {read.camera_id!r} is not mapped to a bay in source {source.name!r}")
        camera = f"{source.name}:{read.camera_id}"[:200]
        out.append(Prepared(read, bay, camera, save_image(evidence_dir, source.name, read)))
    return out


def store_reads(db: Session, source: SourceSettings, reads: list[OutsideRead], now: datetime,
                evidence_dir: Path) -> list[EventEnvelope]:
    """Apply reads in the caller's transaction; the envelopes stored (to publish after the commit). A read
    already stored (same message id) changes nothing. Raises SourceError for an unmapped camera."""
    return store_prepared(db, source, prepare_reads(source, reads, evidence_dir), now)


def store_prepared(db: Session, source: SourceSettings, items: list[Prepared], now: datetime) -> list[EventEnvelope]:
    """`store_reads` after `prepare_reads`: each read's presence locked and its events stored one by one."""
    stored: list[EventEnvelope] = []
    for item in items:
        row = _lock_presence(db, item.bay)
        events, held = on_read(_held(row), item.read, source=source.name, camera=item.camera, bay_id=item.bay,
                               timeout_s=source.presence_timeout_s, evidence=item.evidence)
        envelopes = _envelopes(source, item.read, events)
        if not ingest(db, envelopes[0], source=f"source:{source.name}", now=now):
            continue  # a replay: its events and the presence change were applied the first time
        for env in envelopes[1:]:
            ingest(db, env, source=f"source:{source.name}", now=now)
        stored += envelopes
        _keep(db, item.bay, row, held)
        db.flush()
    return stored


def _envelopes(source: SourceSettings, read: OutsideRead, events: list[Any]) -> list[EventEnvelope]:
    return [EventEnvelope(event_id=f"src:{source.name}:{read.message_id}:{k}"[:128], event=ev)
            for k, ev in enumerate(events)]


def _keep(db: Session, bay: str, row: SourcePresence | None, held: Held | None) -> SourcePresence | None:
    """Store the car the bay holds now (none: the row goes); the row, for the next read of the batch."""
    if held is None:
        if row is not None:
            db.delete(row)
        return None
    row = row or SourcePresence(bay_id=bay, source=held.source, camera=held.camera, presence_id=held.presence_id,
                                first_seen=held.first_seen, last_seen=held.last_seen)
    row.source, row.camera, row.presence_id = held.source, held.camera, held.presence_id
    row.plate, row.confidence = held.plate, held.confidence
    row.first_seen, row.last_seen = held.first_seen, held.last_seen
    db.add(row)
    return row


def store_batch(db: Session, jobs: list[tuple[SourceSettings, list[Prepared], datetime]]) -> list[list[EventEnvelope]]:
    """Many requests' prepared reads in the caller's transaction, in order, with a fixed number of statements
    (the bays' presences locked in one query, the replays found in one, the events stored by `ingest_batch`,
    the presences written in one or two). The envelopes each job stored. An id stored concurrently elsewhere
    fails with IntegrityError: the caller retries the jobs one by one with `store_prepared`."""
    table = SourcePresence.__table__  # type: ignore[attr-defined]
    bays = sorted({item.bay for _, items, _ in jobs for item in items})
    held: dict[str, Held | None] = dict.fromkeys(bays)
    for i in range(0, len(bays), 500):
        q = sa_select(table).where(table.c.bay_id.in_(bays[i : i + 500])).order_by(table.c.bay_id)
        if db.get_bind().dialect.name == "postgresql":
            q = q.with_for_update()
        for r in db.execute(q).mappings():
            held[r["bay_id"]] = Held(source=r["source"], camera=r["camera"], presence_id=r["presence_id"],
                                     plate=r["plate"], confidence=r["confidence"], first_seen=r["first_seen"],
                                     last_seen=r["last_seen"])
    had = {b for b, h in held.items() if h is not None}
    firsts = sorted({f"src:{src.name}:{item.read.message_id}:0"[:128] for src, items, _ in jobs for item in items})
    seen: set[str] = set()
    for i in range(0, len(firsts), 500):
        seen.update(db.exec(select(StoredEvent.event_id).where(StoredEvent.event_id.in_(firsts[i : i + 500]))))  # type: ignore[attr-defined]
    out: list[list[EventEnvelope]] = []
    pending: list[tuple[EventEnvelope, str]] = []
    received: list[datetime] = []  # each request's own receipt time, for its events
    changed: set[str] = set()
    for source, items, now in jobs:
        stored: list[EventEnvelope] = []
        for item in items:
            first = f"src:{source.name}:{item.read.message_id}:0"[:128]
            if first in seen:
                continue  # a replay (or the same read twice in this batch): applied the first time
            seen.add(first)
            events, held[item.bay] = on_read(held[item.bay], item.read, source=source.name, camera=item.camera,
                                             bay_id=item.bay, timeout_s=source.presence_timeout_s,
                                             evidence=item.evidence)
            envelopes = _envelopes(source, item.read, events)
            pending += [(env, f"source:{source.name}") for env in envelopes]
            received += [now] * len(envelopes)
            stored += envelopes
            changed.add(item.bay)
        out.append(stored)
    if pending:  # one multi-row insert for the whole batch (it used to be one per request: each has its own time)
        ingest_batch(db, pending, now=received[0], checked=True, received=received)
    gone = sorted(b for b in changed if held[b] is None and b in had)
    if gone:
        db.execute(table.delete().where(table.c.bay_id.in_(gone)))
    keep = [{"bay_id": b, **_held_row(h)} for b in sorted(changed) if (h := held[b]) is not None]
    if keep:
        insert_rows(db, table, keep, ["bay_id"], list(_HELD_COLUMNS))
    return out


_HELD_COLUMNS = ("source", "camera", "presence_id", "plate", "confidence", "first_seen", "last_seen")


def _held_row(h: Held) -> dict[str, Any]:
    return {"source": h.source, "camera": h.camera, "presence_id": h.presence_id, "plate": h.plate,
            "confidence": h.confidence, "first_seen": h.first_seen, "last_seen": h.last_seen}


def count(db: Session, source: str, now: datetime, error: str | None = None, accepted: int = 1) -> None:
    """`accepted` more accepted requests (error None) or one more rejected request of `source`, in the
    caller's transaction. One upsert: two threads counting a source's first request both count."""
    table = SourceCounter.__table__  # type: ignore[attr-defined]
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    ok, bad = (accepted, 0) if error is None else (0, 1)
    row = {"source": source, "accepted": ok, "rejected": bad, "last_at": now,
           "last_error": error[:500] if error is not None else None}
    stmt = insert(table).values(**row)
    update = {"accepted": table.c.accepted + stmt.excluded.accepted,
              "rejected": table.c.rejected + stmt.excluded.rejected, "last_at": stmt.excluded.last_at}
    if error is not None:
        update["last_error"] = stmt.excluded.last_error
    db.execute(stmt.on_conflict_do_update(index_elements=["source"], set_=update))


def sweep_presences(engine: Any, sources: list[SourceSettings], bays: dict[str, Any],
                    now: datetime) -> list[EventEnvelope]:
    """Departures of held cars whose cable came out or whose source fell silent past its timeout.

    The held cars are read without locks, the ended charging sessions since the oldest of them in one
    query, and only the rows found due are then locked (SKIP LOCKED: instances sweeping together never
    double a departure) and checked again, so the sweep never holds the intake's rows for long."""
    table = SourcePresence.__table__  # type: ignore[attr-defined]
    out: list[EventEnvelope] = []
    try:
        with Session(engine, expire_on_commit=False) as db:
            held = {r["bay_id"]: _held_of(r) for r in db.execute(sa_select(table)).mappings()}
            if not held:
                return []
            ended = _ended_sessions(db, bays, held)
            due: dict[str, Any] = {}
            for bay_id, h in held.items():
                ev = None
                bay = bays.get(bay_id)
                if bay is not None and bay.charge_point_id:
                    key = (bay.charge_point_id, bay.evse_id, bay.connector_id)
                    at = next((t for t in ended.get(key, ()) if t >= h.first_seen), None)
                    if at is not None:
                        ev = unplugged(h, bay_id, at)
                if ev is None:
                    source = next((s for s in sources if s.name == h.source), None)
                    ev = expire(h, bay_id, now, source.presence_timeout_s if source is not None else 0)
                if ev is not None:
                    due[bay_id] = ev
            if not due:
                return []
            q = sa_select(table).where(table.c.bay_id.in_(sorted(due))).order_by(table.c.bay_id)
            if engine.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            for r in db.execute(q).mappings():
                if _held_of(r) != held[r["bay_id"]]:
                    continue  # a read came in meanwhile: the next sweep looks again
                env = EventEnvelope(event_id=f"src:{r['source']}:{r['presence_id']}:departed"[:128],
                                    event=due[r["bay_id"]])
                if ingest(db, env, source=f"source:{r['source']}", now=now):
                    out.append(env)
                db.execute(table.delete().where(table.c.bay_id == r["bay_id"]))
            db.commit()
    except SQLAlchemyError as exc:
        log.warning("source presences not swept: %s", str(exc).splitlines()[0])
        return []
    return out


def _held_of(r: Any) -> Held:
    return Held(source=r["source"], camera=r["camera"], presence_id=r["presence_id"], plate=r["plate"],
                confidence=r["confidence"], first_seen=r["first_seen"], last_seen=r["last_seen"])


def _ended_sessions(db: Session, bays: dict[str, Any], held: dict[str, Held]) -> dict[tuple, list[datetime]]:
    """End times of the charging sessions that ended since the oldest held car arrived, by (charge point,
    EVSE, connector) as the bays name them (None: any), oldest first."""
    wired = [bays[b] for b in held if b in bays and bays[b].charge_point_id]
    if not wired:
        return {}
    since = min(held[b.bay_id].first_seen for b in wired)
    points = sorted({b.charge_point_id for b in wired})
    out: dict[tuple, list[datetime]] = {}
    for i in range(0, len(points), 500):
        q = (select(Transaction.charge_point_id, Transaction.evse_id, Transaction.connector_id, Transaction.ended_at)
             .where(Transaction.charge_point_id.in_(points[i : i + 500]))  # type: ignore[attr-defined]
             .where(Transaction.ended_at != None, Transaction.ended_at >= since)  # type: ignore[operator]  # noqa: E711
             .order_by(Transaction.ended_at))
        for cp, evse, conn, at in db.exec(q):
            for key in {(cp, e, c) for e in (evse, None) for c in (conn, None)}:
                out.setdefault(key, []).append(at)
    return out
