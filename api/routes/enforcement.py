"""Enforcement over HTTP: visits, penalties (review and lifecycle), white/blacklists with CSV, vehicles."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlmodel import Session, select

from api.deps import Ctx, DbSession, Operator, Viewer, client_ip
from enforcement.lists import normalise_plate
from models import audit
from models.tables import AccessLog, ListEntry, Penalty, Vehicle, VisitRow

router = APIRouter(prefix="/api/v1", tags=["enforcement"])

# Allowed lifecycle moves: (from states) -> to state, per operator action.
TRANSITIONS: dict[str, tuple[set[str], str]] = {
    "issue": ({"pending_review", "violation"}, "notice_issued"),
    "waive": ({"pending_review", "violation", "notice_issued", "disputed"}, "waived"),
    "mark-paid": ({"notice_issued"}, "paid"),
    "dispute": ({"notice_issued"}, "disputed"),
    "uphold": ({"disputed"}, "notice_issued"),
}


class PenaltyOut(BaseModel):
    violation_id: str
    visit_id: str
    bay_id: str
    kind: str
    plate: str | None
    started_at: datetime
    ended_at: datetime | None
    minutes: int | None
    amount: str
    currency: str
    state: str
    needs_review: bool
    review_reason: str | None
    note: str
    updated_at: datetime


class VisitOut(BaseModel):
    visit_id: str
    bay_id: str
    plate: str | None
    plate_confidence: float
    arrived_at: datetime
    departed_at: datetime | None
    close_reason: str | None
    charge_point_id: str | None
    transaction_id: str | None
    exempt: bool
    blacklisted: bool
    timeline: list[dict[str, Any]]
    penalties: list[PenaltyOut] = []


@router.get("/visits", response_model=list[VisitOut])
def list_visits(db: DbSession, _: Viewer, bay_id: str | None = None, plate: str | None = None,
                open_only: bool = False, limit: int = Query(100, ge=1, le=500)) -> list[VisitOut]:
    q = select(VisitRow).order_by(VisitRow.arrived_at.desc()).limit(limit)  # type: ignore[attr-defined]
    if bay_id:
        q = q.where(VisitRow.bay_id == bay_id)
    if plate:
        q = q.where(VisitRow.plate == normalise_plate(plate))
    if open_only:
        q = q.where(VisitRow.departed_at == None)  # noqa: E711
    return [_visit(db, v, with_penalties=False) for v in db.exec(q)]


@router.get("/visits/{visit_id:path}", response_model=VisitOut)
def get_visit(visit_id: str, db: DbSession, _: Viewer) -> VisitOut:
    v = db.get(VisitRow, visit_id)
    if v is None:
        raise HTTPException(404, "no such visit")
    return _visit(db, v, with_penalties=True)


def _visit(db: Session, v: VisitRow, with_penalties: bool) -> VisitOut:
    pens = list(db.exec(select(Penalty).where(Penalty.visit_id == v.visit_id))) if with_penalties else []
    return VisitOut(**v.model_dump(exclude={"data", "updated_at"}), timeline=list(v.data.get("timeline", [])),
                    penalties=[PenaltyOut.model_validate(p, from_attributes=True) for p in pens])


@router.get("/penalties", response_model=list[PenaltyOut])
def list_penalties(db: DbSession, _: Viewer, state: str | None = None, plate: str | None = None,
                   limit: int = Query(100, ge=1, le=500)) -> list[Penalty]:
    q = select(Penalty).order_by(Penalty.updated_at.desc()).limit(limit)  # type: ignore[attr-defined]
    if state:
        q = q.where(Penalty.state == state)
    if plate:
        q = q.where(Penalty.plate == normalise_plate(plate))
    return list(db.exec(q))


class PenaltyAction(BaseModel):
    note: str = Field("", max_length=2000, description="Reason (required to waive or dispute).")
    plate: str | None = Field(None, max_length=16, description="Corrected plate, when issuing after review.")


@router.post("/penalties/{violation_id:path}/{action}", response_model=PenaltyOut)
def act_on_penalty(violation_id: str, action: Literal["issue", "waive", "mark-paid", "dispute", "uphold"],
                   body: PenaltyAction, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Penalty:
    p = db.get(Penalty, violation_id)
    if p is None:
        raise HTTPException(404, "no such penalty")
    allowed, target = TRANSITIONS[action]
    if p.state not in allowed:
        raise HTTPException(409, f"cannot {action} a penalty that is {p.state}")
    if action in ("waive", "dispute") and not body.note.strip():
        raise HTTPException(422, f"a reason is required to {action}")
    before = PenaltyOut.model_validate(p, from_attributes=True).model_dump(mode="json")
    if action == "issue" and body.plate:
        p.plate = normalise_plate(body.plate) or p.plate
    if action == "issue" and p.plate is None:
        raise HTTPException(422, "confirm the plate against the evidence before issuing (plate is unreadable)")
    p.state, p.updated_at = target, ctx.clock()
    if body.note:
        p.note = body.note
    if action == "issue":
        p.needs_review = False
    db.add(p)
    audit.record(db, actor=op.name, action=f"penalty_{action}", entity="penalty", entity_id=violation_id,
                 before=before, after=PenaltyOut.model_validate(p, from_attributes=True).model_dump(mode="json"),
                 ip=client_ip(request), at=ctx.clock())
    notify = getattr(ctx, "notify", None)
    if action in ("issue", "uphold") and notify is not None:
        notify(db, "penalty_notice", {**before, "state": p.state, "plate": p.plate, "bay_id": p.bay_id})
    db.commit()
    db.refresh(p)
    return p


# --- lists ----------------------------------------------------------------------------------


class ListEntryIn(BaseModel):
    plate: str = Field(min_length=1, max_length=16)
    owner: str = Field("", max_length=200)
    reason: str = Field("", max_length=500)
    priority: int = Field(5, ge=0, le=9)
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @field_validator("plate")
    @classmethod
    def _plate(cls, v: str) -> str:
        plate = normalise_plate(v) or ""
        if not 2 <= len(plate) <= 12:
            raise ValueError("a plate has 2 to 12 letters and digits")
        return plate

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-01T00:00:00Z")
        return v


class ListEntryOut(ListEntryIn):
    id: int
    list: str
    created_by: str
    created_at: datetime


ListName = Literal["whitelist", "blacklist"]
_KEY = {"whitelist": "white", "blacklist": "black"}


@router.get("/lists/{name}", response_model=list[ListEntryOut])
def list_entries(name: ListName, db: DbSession, _: Viewer, q: str | None = None) -> list[ListEntry]:
    rows = list(db.exec(select(ListEntry).where(ListEntry.list == _KEY[name]).order_by(ListEntry.plate)))
    if q:
        from rapidfuzz.distance import Levenshtein

        needle = normalise_plate(q)
        rows = [r for r in rows if needle in r.plate or Levenshtein.distance(needle, r.plate) <= 1]
    return rows


def _add(db: Session, name: str, entry: ListEntryIn, actor: str, now: datetime, ip: str) -> ListEntry:
    row = ListEntry(list=_KEY[name], created_by=actor, created_at=now, **entry.model_dump())
    db.add(row)
    db.flush()
    audit.record(db, actor=actor, action="create", entity=name, entity_id=str(row.id),
                 after=entry.model_dump(mode="json"), ip=ip, at=now)
    return row


@router.post("/lists/{name}", response_model=ListEntryOut, status_code=201)
def add_entry(name: ListName, body: ListEntryIn, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> ListEntry:
    row = _add(db, name, body, op.name, ctx.clock(), client_ip(request))
    db.commit()
    db.refresh(row)
    return row


@router.delete("/lists/{name}/{entry_id}", status_code=204)
def delete_entry(name: ListName, entry_id: int, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> None:
    row = db.get(ListEntry, entry_id)
    if row is None or row.list != _KEY[name]:
        raise HTTPException(404, "no such entry")
    audit.record(db, actor=op.name, action="delete", entity=name, entity_id=str(entry_id),
                 before=ListEntryIn.model_validate(row, from_attributes=True).model_dump(mode="json"),
                 ip=client_ip(request), at=ctx.clock())
    db.delete(row)
    db.commit()


CSV_FIELDS = ["plate", "owner", "reason", "priority", "valid_from", "valid_until"]
MAX_CSV_BYTES = 1 << 20


class RowError(BaseModel):
    line: int
    errors: list[str]


class ImportResult(BaseModel):
    dry_run: bool
    valid: int
    imported: int
    errors: list[RowError]
    preview: list[ListEntryIn]


@router.post("/lists/{name}/import", response_model=ImportResult)
async def import_csv(name: ListName, request: Request, ctx: Ctx, db: DbSession, op: Operator,
                     file: UploadFile = File(...), dry_run: bool = True) -> ImportResult:
    """CSV with a header (plate, owner, reason, priority, valid_from, valid_until). With `dry_run`
    (the default) nothing is stored: the preview and per-row errors come back. Without it, the file is
    imported only if every row is valid: all rows or none."""
    raw = await file.read(MAX_CSV_BYTES + 1)
    if len(raw) > MAX_CSV_BYTES:
        raise HTTPException(413, f"CSV files are limited to {MAX_CSV_BYTES >> 10} KiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(422, "the CSV must be UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "plate" not in [f.strip().lower() for f in reader.fieldnames]:
        raise HTTPException(422, f"the first line must be a header naming at least 'plate' (columns: {CSV_FIELDS})")
    unknown = [f for f in reader.fieldnames if f.strip().lower() not in CSV_FIELDS]
    if unknown:
        raise HTTPException(422, f"unknown columns {unknown}; allowed: {CSV_FIELDS}")
    good: list[ListEntryIn] = []
    errors: list[RowError] = []
    for line_no, rec in enumerate(reader, start=2):
        data = {k.strip().lower(): (v or "").strip() for k, v in rec.items() if k is not None}
        data = {k: v for k, v in data.items() if v != ""}
        try:
            good.append(ListEntryIn.model_validate(data))
        except ValidationError as exc:
            errors.append(RowError(line=line_no, errors=[f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                         for e in exc.errors()]))
    imported = 0
    if not dry_run:
        if errors:
            raise HTTPException(422, {"message": "nothing imported: fix the rows with errors first",
                                      "errors": [e.model_dump() for e in errors]})
        for entry in good:
            _add(db, name, entry, op.name, ctx.clock(), client_ip(request))
        db.commit()
        imported = len(good)
    return ImportResult(dry_run=dry_run, valid=len(good), imported=imported, errors=errors, preview=good[:50])


@router.get("/lists/{name}/export")
def export_csv(name: ListName, db: DbSession, _: Viewer) -> Response:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_FIELDS)
    for r in db.exec(select(ListEntry).where(ListEntry.list == _KEY[name]).order_by(ListEntry.plate)):
        w.writerow([r.plate, r.owner, r.reason, r.priority, r.valid_from.isoformat() if r.valid_from else "",
                    r.valid_until.isoformat() if r.valid_until else ""])
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


# --- vehicles -------------------------------------------------------------------------------


class VehicleIn(BaseModel):
    plate: str = Field(min_length=2, max_length=16)
    owner_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

    @field_validator("plate")
    @classmethod
    def _plate(cls, v: str) -> str:
        plate = normalise_plate(v) or ""
        if not 2 <= len(plate) <= 12:
            raise ValueError("a plate has 2 to 12 letters and digits")
        return plate


@router.get("/vehicles", response_model=list[VehicleIn])
def list_vehicles(db: DbSession, _: Operator) -> list[Vehicle]:
    return list(db.exec(select(Vehicle).order_by(Vehicle.plate)))


@router.put("/vehicles/{plate}", response_model=VehicleIn)
def put_vehicle(plate: str, body: VehicleIn, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Vehicle:
    if normalise_plate(plate) != body.plate:
        raise HTTPException(422, "the plate in the path and the body differ")
    row = db.get(Vehicle, body.plate)
    before = VehicleIn.model_validate(row, from_attributes=True).model_dump() if row else None
    row = row or Vehicle(plate=body.plate, created_at=ctx.clock())
    row.owner_name, row.email = body.owner_name, body.email
    db.add(row)
    audit.record(db, actor=op.name, action="update" if before else "create", entity="vehicle", entity_id=body.plate,
                 before=before, after=body.model_dump(), ip=client_ip(request), at=ctx.clock())
    db.commit()
    db.refresh(row)
    return row


@router.get("/access-log")
def access_log(db: DbSession, _: Viewer, accepted: bool | None = None,
               limit: int = Query(100, ge=1, le=500)) -> list[dict[str, Any]]:
    q = select(AccessLog).order_by(AccessLog.id.desc()).limit(limit)  # type: ignore[union-attr]
    if accepted is not None:
        q = q.where(AccessLog.accepted == accepted)
    return [r.model_dump(mode="json") for r in db.exec(q)]
