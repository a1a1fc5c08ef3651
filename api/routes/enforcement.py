"""Enforcement over HTTP: visits, penalties (review and lifecycle), white/blacklists with CSV, vehicles."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import and_, or_
from sqlmodel import Session, select

from api.deps import Ctx, DbSession, Operator, Viewer, client_ip
from api.limits import CSV_BODY
from api.pagination import (
    CURSOR_HELP,
    CURSOR_MAX,
    RowIdPath,
    SaneTime,
    after_key,
    as_utc,
    cursor_int,
    cursor_str,
    cursor_time,
    decode_cursor,
    encode_cursor,
    set_next_headers,
)
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


# --- visits ---------------------------------------------------------------------------------


def query_visits(db: Session, *, bay_id: str | None = None, plate: str | None = None, open_only: bool = False,
                 since: datetime | None = None, until: datetime | None = None, cursor: str | None = None,
                 limit: int = 100) -> tuple[list[VisitRow], str | None]:
    """One page of visits, newest arrival first (ties by visit id), and the cursor of the next page."""
    q = select(VisitRow).order_by(VisitRow.arrived_at.desc(), VisitRow.visit_id.desc())  # type: ignore[attr-defined]
    if bay_id:
        q = q.where(VisitRow.bay_id == bay_id)
    if plate:
        q = q.where(VisitRow.plate == normalise_plate(plate))
    if open_only:
        q = q.where(VisitRow.departed_at == None)  # noqa: E711
    if since:
        q = q.where(VisitRow.arrived_at >= as_utc(since))
    if until:
        q = q.where(VisitRow.arrived_at < as_utc(until))
    if cursor:
        at_text, vid = decode_cursor(cursor, 2)
        at = cursor_time(at_text)
        q = q.where(or_(VisitRow.arrived_at < at, and_(VisitRow.arrived_at == at,  # type: ignore[arg-type]
                                                       VisitRow.visit_id < cursor_str(vid))))
    rows = list(db.exec(q.limit(limit + 1)))
    nxt = encode_cursor(rows[limit - 1].arrived_at, rows[limit - 1].visit_id) if len(rows) > limit else None
    return rows[:limit], nxt


@router.get("/visits", response_model=list[VisitOut])
def list_visits(
    request: Request, response: Response, db: DbSession, _: Viewer,
    bay_id: str | None = None,
    plate: Annotated[str | None, Query(description="Plate; case, spaces and dashes are ignored")] = None,
    open_only: Annotated[bool, Query(description="Only cars still in their bay")] = False,
    since: Annotated[
        datetime | None, Query(description="Arrived at or after (ISO 8601; UTC if no zone)"), SaneTime
    ] = None,
    until: Annotated[datetime | None, Query(description="Arrived before (ISO 8601; no zone: UTC)"), SaneTime] = None,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, description=CURSOR_HELP)] = None,
    limit: int = Query(100, ge=1, le=500),
) -> list[VisitOut]:
    """Newest arrival first. More pages: `X-Next-Cursor` and `Link: <...>; rel="next"` headers."""
    rows, nxt = query_visits(db, bay_id=bay_id, plate=plate, open_only=open_only, since=since, until=until,
                             cursor=cursor, limit=limit)
    set_next_headers(request, response, nxt)
    return [_visit(db, v, with_penalties=False) for v in rows]


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


def query_penalties(db: Session, *, state: str | None = None, plate: str | None = None, bay_id: str | None = None,
                    kind: str | None = None, since: datetime | None = None, until: datetime | None = None,
                    cursor: str | None = None, limit: int = 100) -> tuple[list[Penalty], str | None]:
    """One page of penalties, newest violation start first (ties by violation id), and the next page's cursor.
    The key is `started_at`, set once when the violation is raised: unlike `updated_at` it never changes on a
    state move, so a penalty issued or waived while someone pages cannot jump between pages."""
    q = select(Penalty).order_by(Penalty.started_at.desc(), Penalty.violation_id.desc())  # type: ignore[attr-defined]
    if state:
        q = q.where(Penalty.state == state)
    if plate:
        q = q.where(Penalty.plate == normalise_plate(plate))
    if bay_id:
        q = q.where(Penalty.bay_id == bay_id)
    if kind:
        q = q.where(Penalty.kind == kind)
    if since:
        q = q.where(Penalty.started_at >= as_utc(since))
    if until:
        q = q.where(Penalty.started_at < as_utc(until))
    if cursor:
        at, vid = decode_cursor(cursor, 2)
        q = q.where(after_key([Penalty.started_at, Penalty.violation_id], [cursor_time(at), cursor_str(vid)]))
    rows = list(db.exec(q.limit(limit + 1)))
    nxt = encode_cursor(rows[limit - 1].started_at, rows[limit - 1].violation_id) if len(rows) > limit else None
    return rows[:limit], nxt


def list_penalties(db: Session, _principal: Any = None, state: str | None = None, plate: str | None = None,
                   limit: int = 100) -> list[Penalty]:
    """The first page only (the dashboard's review page); GET /api/v1/penalties pages with a cursor."""
    return query_penalties(db, state=state, plate=plate, limit=limit)[0]


@router.get("/penalties", response_model=list[PenaltyOut], name="list_penalties")
def penalties(
    request: Request, response: Response, db: DbSession, _: Viewer,
    state: Annotated[str | None, Query(description="e.g. pending_review, violation, notice_issued, disputed, "
                                                   "paid, waived, no_charge, voided")] = None,
    plate: Annotated[str | None, Query(description="Plate; case, spaces and dashes are ignored")] = None,
    bay_id: str | None = None,
    kind: Annotated[str | None, Query(description="idle, overstay, no_charging or return_ban")] = None,
    since: Annotated[datetime | None, Query(description="Violation started at or after (ISO 8601; no zone: "
                                                        "UTC)"), SaneTime] = None,
    until: Annotated[datetime | None, Query(description="Violation started before (ISO 8601; no zone: UTC)"),
                     SaneTime] = None,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, description=CURSOR_HELP)] = None,
    limit: int = Query(100, ge=1, le=500),
) -> list[Penalty]:
    """Newest violation start first. More pages: `X-Next-Cursor` and `Link: <...>; rel="next"` headers."""
    rows, nxt = query_penalties(db, state=state, plate=plate, bay_id=bay_id, kind=kind, since=since, until=until,
                                cursor=cursor, limit=limit)
    set_next_headers(request, response, nxt)
    return rows


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

    @field_validator("valid_until")
    @classmethod
    def _after_start(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        if cls is not ListEntryIn:  # ListEntryOut shows a stored row as it is, even one from before this check
            return v
        start = info.data.get("valid_from")
        if v is not None and start is not None and v <= start:
            raise ValueError("must be after 'valid from'")
        return v


EntryState = Literal["active", "expired", "scheduled"]


def entry_state(valid_from: datetime | None, valid_until: datetime | None, now: datetime) -> EntryState:
    """expired: valid_until has passed (exclusive end); scheduled: valid_from is still ahead."""
    if valid_until is not None and valid_until <= now:
        return "expired"
    if valid_from is not None and valid_from > now:
        return "scheduled"
    return "active"


class ListEntryOut(ListEntryIn):
    id: int
    list: str
    created_by: str
    created_at: datetime
    state: EntryState = Field("active", description="active, expired (valid_until passed) or scheduled "
                                                    "(valid_from ahead); only active entries exempt or alert")


class ListEntryPatch(BaseModel):
    """Fields to change; absent fields keep their value, `null` clears valid_from / valid_until."""

    model_config = {"extra": "forbid"}
    owner: str | None = Field(None, max_length=200)
    reason: str | None = Field(None, max_length=500)
    priority: int | None = Field(None, ge=0, le=9)
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return ListEntryIn._aware(v)


ListName = Literal["whitelist", "blacklist"]
_KEY = {"whitelist": "white", "blacklist": "black"}


ListStatus = Literal["active", "expired", "all"]


def entry_out(row: ListEntry, now: datetime) -> ListEntryOut:
    out = ListEntryOut.model_validate(row, from_attributes=True)
    out.state = entry_state(row.valid_from, row.valid_until, now)
    return out


def query_entries(db: Session, name: str, now: datetime, *, q: str | None = None, status: ListStatus = "all",
                  cursor: str | None = None, limit: int = 200) -> tuple[list[ListEntry], str | None]:
    """One page of a list, by plate (then id), and the cursor of the next page. `q`: plate contains the
    text or is one character off; `status` active: not expired (scheduled ones included)."""
    stmt = select(ListEntry).where(ListEntry.list == _KEY[name]).order_by(ListEntry.plate, ListEntry.id)
    if status == "active":
        stmt = stmt.where(or_(ListEntry.valid_until == None, ListEntry.valid_until > now))  # type: ignore[operator]  # noqa: E711
    elif status == "expired":
        stmt = stmt.where(ListEntry.valid_until <= now)  # type: ignore[operator]
    after: tuple[str, int] | None = None
    if cursor:
        plate, entry_id = decode_cursor(cursor, 2)
        after = (cursor_str(plate), cursor_int(entry_id))
    if not q:
        if after:
            stmt = stmt.where(or_(ListEntry.plate > after[0],  # type: ignore[arg-type]
                                  and_(ListEntry.plate == after[0], ListEntry.id > after[1])))  # type: ignore[operator]
        rows = list(db.exec(stmt.limit(limit + 1)))
    else:
        from rapidfuzz.distance import Levenshtein

        needle = normalise_plate(q) or ""
        rows = [r for r in db.exec(stmt) if needle in r.plate or Levenshtein.distance(needle, r.plate) <= 1]
        if after:
            rows = [r for r in rows if (r.plate, r.id or 0) > after]
        rows = rows[:limit + 1]
    nxt = encode_cursor(rows[limit - 1].plate, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], nxt


@router.get("/lists/{name}", response_model=list[ListEntryOut])
def list_entries(
    name: ListName, request: Request, response: Response, ctx: Ctx, db: DbSession, _: Viewer,
    q: Annotated[str | None, Query(max_length=32, description="Plate contains this, or is 1 character off")] = None,
    status: Annotated[ListStatus, Query(description="active (not expired), expired or all")] = "all",
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, description=CURSOR_HELP)] = None,
    limit: int = Query(200, ge=1, le=1000),
) -> list[ListEntryOut]:
    """By plate. More pages: `X-Next-Cursor` and `Link: <...>; rel="next"` headers."""
    now = ctx.clock()
    rows, nxt = query_entries(db, name, now, q=q, status=status, cursor=cursor, limit=limit)
    set_next_headers(request, response, nxt)
    return [entry_out(r, now) for r in rows]


def _add(db: Session, name: str, entry: ListEntryIn, actor: str, now: datetime, ip: str) -> ListEntry:
    row = ListEntry(list=_KEY[name], created_by=actor, created_at=now, **entry.model_dump())
    db.add(row)
    db.flush()
    audit.record(db, actor=actor, action="create", entity=name, entity_id=str(row.id),
                 after=entry.model_dump(mode="json"), ip=ip, at=now)
    return row


@router.post("/lists/{name}", response_model=ListEntryOut, status_code=201)
def add_entry(name: ListName, body: ListEntryIn, request: Request, ctx: Ctx, db: DbSession,
              op: Operator) -> ListEntryOut:
    row = _add(db, name, body, op.name, ctx.clock(), client_ip(request))
    db.commit()
    db.refresh(row)
    return entry_out(row, ctx.clock())


def _entry(db: Session, name: str, entry_id: int) -> ListEntry:
    row = db.get(ListEntry, entry_id)
    if row is None or row.list != _KEY[name]:
        raise HTTPException(404, "no such entry")
    return row


def _snapshot(row: ListEntry) -> dict[str, Any]:
    out = ListEntryOut.model_validate(row, from_attributes=True)
    return out.model_dump(mode="json", include=set(ListEntryIn.model_fields))


@router.patch("/lists/{name}/{entry_id}", response_model=ListEntryOut)
def update_entry(name: ListName, entry_id: RowIdPath, body: ListEntryPatch, request: Request, ctx: Ctx, db: DbSession,
                 op: Operator) -> ListEntryOut:
    """Change owner, reason, priority or validity (the plate is the entry: delete and add to change it).
    A 422 names the field, as FastAPI's own validation errors do."""
    row = _entry(db, name, entry_id)
    before = _snapshot(row)
    try:
        merged = ListEntryIn.model_validate({**before, **body.model_dump(exclude_unset=True)})
    except ValidationError as exc:
        raise HTTPException(422, [{"loc": ["body", *e["loc"]], "msg": str(e["msg"]).removeprefix("Value error, "),
                                   "type": e["type"]} for e in exc.errors()]) from None
    for field in ("owner", "reason", "priority", "valid_from", "valid_until"):
        setattr(row, field, getattr(merged, field))
    db.add(row)
    audit.record(db, actor=op.name, action="update", entity=name, entity_id=str(entry_id), before=before,
                 after=_snapshot(row), ip=client_ip(request), at=ctx.clock())
    db.commit()
    db.refresh(row)
    return entry_out(row, ctx.clock())


@router.post("/lists/{name}/{entry_id}/expire", response_model=ListEntryOut)
def expire_entry(name: ListName, entry_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession,
                 op: Operator) -> ListEntryOut:
    """End the entry now (valid_until = now): it stays listed, greyed, and no longer exempts or alerts.
    An entry already expired is returned unchanged; one that has not started yet is a 409 (delete it)."""
    row, now = _entry(db, name, entry_id), ctx.clock()
    state = entry_state(row.valid_from, row.valid_until, now)
    if state == "scheduled":
        raise HTTPException(409, "this entry has not started yet: delete it or change its dates instead")
    if state == "active":
        before = _snapshot(row)
        row.valid_until = now
        db.add(row)
        audit.record(db, actor=op.name, action="expire", entity=name, entity_id=str(entry_id), before=before,
                     after=_snapshot(row), ip=client_ip(request), at=now)
        db.commit()
        db.refresh(row)
    return entry_out(row, now)


@router.delete("/lists/{name}/{entry_id}", status_code=204)
def delete_entry(name: ListName, entry_id: RowIdPath, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> None:
    row = _entry(db, name, entry_id)
    audit.record(db, actor=op.name, action="delete", entity=name, entity_id=str(entry_id), before=_snapshot(row),
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


@router.post("/lists/{name}/import", response_model=ImportResult, max_body_size=CSV_BODY)
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
    # newline="": the csv module splits lines itself (a lone CR inside a field is then data, not an error).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return _import_rows(name, reader, request, ctx, db, op, dry_run)
    except csv.Error as exc:  # e.g. a quote never closed, a NUL byte
        raise HTTPException(422, f"not a readable CSV file (line {reader.line_num}): {exc}") from None


def _import_rows(name: str, reader: csv.DictReader, request: Request, ctx: Ctx, db: DbSession, op: Any,
                 dry_run: bool) -> ImportResult:
    if not reader.fieldnames or "plate" not in [f.strip().lower() for f in reader.fieldnames]:
        raise HTTPException(422, f"the first line must be a header naming at least 'plate' (columns: {CSV_FIELDS})")
    unknown = [f for f in reader.fieldnames if f.strip().lower() not in CSV_FIELDS]
    if unknown:
        raise HTTPException(422, f"unknown columns {unknown}; allowed: {CSV_FIELDS}")
    good: list[ListEntryIn] = []
    errors: list[RowError] = []
    for line_no, rec in enumerate(reader, start=2):
        data = {k.strip().lower(): csv_unescape((v or "").strip()) for k, v in rec.items() if k is not None}
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


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_safe(value: object) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading apostrophe
    (OWASP's advice for CSV injection; the apostrophe is not shown by Excel, LibreOffice or Sheets)."""
    text = "" if value is None else str(value)
    stripped = text.lstrip(" ")
    return "'" + text if stripped.startswith(_FORMULA_START) else text


def csv_unescape(text: str) -> str:
    """Undo `csv_safe` so an exported list imports back unchanged."""
    return text[1:] if text.startswith("'") and text[1:].lstrip(" ").startswith(_FORMULA_START) else text


@router.get("/lists/{name}/export")
def export_csv(name: ListName, db: DbSession, _: Viewer) -> Response:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_FIELDS)
    for r in db.exec(select(ListEntry).where(ListEntry.list == _KEY[name]).order_by(ListEntry.plate)):
        valid_from = r.valid_from.isoformat() if r.valid_from else ""
        valid_until = r.valid_until.isoformat() if r.valid_until else ""
        w.writerow([csv_safe(r.plate), csv_safe(r.owner), csv_safe(r.reason), r.priority, valid_from, valid_until])
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


def query_vehicles(db: Session, *, q: str | None = None, cursor: str | None = None,
                   limit: int = 100) -> tuple[list[Vehicle], str | None]:
    """One page of vehicles by plate, and the next page's cursor. `q`: the plate or the owner's name contains
    the text (case-insensitive; spaces and dashes in a plate are ignored)."""
    stmt = select(Vehicle).order_by(Vehicle.plate)
    if q:
        match = Vehicle.owner_name.icontains(q, autoescape=True)  # type: ignore[attr-defined]
        needle = normalise_plate(q)
        if needle:
            match = or_(match, Vehicle.plate.contains(needle, autoescape=True))  # type: ignore[attr-defined]
        stmt = stmt.where(match)
    if cursor:
        (plate,) = decode_cursor(cursor, 1)
        stmt = stmt.where(Vehicle.plate > cursor_str(plate))
    rows = list(db.exec(stmt.limit(limit + 1)))
    nxt = encode_cursor(rows[limit - 1].plate) if len(rows) > limit else None
    return rows[:limit], nxt


@router.get("/vehicles", response_model=list[VehicleIn])
def list_vehicles(
    request: Request, response: Response, db: DbSession, _: Operator,
    q: Annotated[str | None, Query(max_length=200, description="Plate or owner name contains this "
                                                             "(case-insensitive)")] = None,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, description=CURSOR_HELP)] = None,
    limit: int = Query(100, ge=1, le=500),
) -> list[Vehicle]:
    """By plate; operators only (owner names and e-mail addresses). More pages: `X-Next-Cursor` and
    `Link: <...>; rel="next"` headers."""
    rows, nxt = query_vehicles(db, q=q, cursor=cursor, limit=limit)
    set_next_headers(request, response, nxt)
    return rows


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


def query_access_log(db: Session, *, accepted: bool | None = None, bay_id: str | None = None,
                     plate: str | None = None, since: datetime | None = None, until: datetime | None = None,
                     cursor: str | None = None, limit: int = 100) -> tuple[list[AccessLog], str | None]:
    """One page of access decisions, newest first (by id: ids only grow), and the next page's cursor."""
    q = select(AccessLog).order_by(AccessLog.id.desc())  # type: ignore[union-attr]
    if accepted is not None:
        q = q.where(AccessLog.accepted == accepted)
    if bay_id:
        q = q.where(AccessLog.bay_id == bay_id)
    if plate:
        q = q.where(AccessLog.plate == normalise_plate(plate))
    if since:
        q = q.where(AccessLog.at >= as_utc(since))
    if until:
        q = q.where(AccessLog.at < as_utc(until))
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        q = q.where(AccessLog.id < cursor_int(last_id))  # type: ignore[operator]
    rows = list(db.exec(q.limit(limit + 1)))
    nxt = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], nxt


@router.get("/access-log")
def access_log(
    request: Request, response: Response, db: DbSession, _: Viewer,
    accepted: Annotated[bool | None, Query(description="Only granted (true) or refused (false) entries")] = None,
    bay_id: str | None = None,
    plate: Annotated[str | None, Query(description="Plate; case, spaces and dashes are ignored")] = None,
    since: Annotated[datetime | None, Query(description="Decided at or after (ISO 8601; no zone: UTC)"),
                     SaneTime] = None,
    until: Annotated[datetime | None, Query(description="Decided before (ISO 8601; no zone: UTC)"), SaneTime] = None,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, description=CURSOR_HELP)] = None,
    limit: int = Query(100, ge=1, le=500),
) -> list[dict[str, Any]]:
    """Newest first. More pages: `X-Next-Cursor` and `Link: <...>; rel="next"` headers."""
    rows, nxt = query_access_log(db, accepted=accepted, bay_id=bay_id, plate=plate, since=since, until=until,
                                 cursor=cursor, limit=limit)
    set_next_headers(request, response, nxt)
    return [r.model_dump(mode="json") for r in rows]
