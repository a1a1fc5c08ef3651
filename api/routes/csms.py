"""CSMS intake (signed webhooks, OCPI 2.2.1 sessions) and the charger state read API.

Each CSMS is configured in `csms_intakes` (or on the settings page; read per request, so an edit or a
rotated secret applies at once) with `auth: hmac` or `auth: bearer`:

* hmac: headers `X-Baywarden-CSMS: <name>`, `X-Baywarden-Timestamp: <unix seconds>` and
  `X-Baywarden-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`. A timestamp
  older than `max_skew_s` is refused (401), and so is the same signature a second time (409).
* bearer: `Authorization: Bearer <secret>` (OCPI's `Authorization: Token <secret>` too).

A request whose event id was already stored answers 200 with `duplicate: true` and stores nothing.
"""

from __future__ import annotations

import dataclasses
import hmac
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from api.deps import Ctx, DbSession, Viewer
from api.pagination import (
    CURSOR_HELP,
    CURSOR_MAX,
    SaneTime,
    after_key,
    as_utc,
    cursor_str,
    cursor_time,
    decode_cursor,
    encode_cursor,
    set_next_headers,
)
from api.security import REPLAYED, check_signed
from models import strictjson
from models.events import EventEnvelope
from models.eventstore import ingest
from models.settings import CsmsIntakeSettings
from models.tables import Charger, ConnectorState, IntakeDecoderState, IntakeReceipt, OcpiSessionRow, Transaction
from ocpp_link.decoder import OcppDecoder
from ocpp_link.intake import IntakeError, citrine_events, ocpi_session, own_event, parse_body
from service import runtime_settings

router = APIRouter(tags=["csms"])
MAX_BODY = 256 * 1024


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="csms"'})


def authenticate_csms(request: Request, body: bytes, intakes: list[CsmsIntakeSettings], db: Session,
                      now: datetime) -> CsmsIntakeSettings:
    auth = request.headers.get("authorization", "")
    scheme, _, secret = auth.partition(" ")
    if scheme.lower() in ("bearer", "token") and secret:
        for intake in intakes:
            if intake.auth == "bearer" and hmac.compare_digest(secret.strip(), intake.secret.get_secret_value()):
                return intake
        raise _unauthorized("unknown CSMS token")
    name = request.headers.get("x-baywarden-csms")
    if not name:
        raise _unauthorized("unsigned request: send X-Baywarden-CSMS, -Timestamp and -Signature, or a bearer token")
    intake = next((i for i in intakes if i.name == name and i.auth == "hmac"), None)
    if intake is None:
        raise _unauthorized(f"no HMAC intake named {name!r} is configured")
    problem = check_signed(db, secret=intake.secret.get_secret_value(),
                           timestamp=request.headers.get("x-baywarden-timestamp", ""),
                           signature=request.headers.get("x-baywarden-signature", ""), body=body,
                           max_skew_s=intake.max_skew_s, now=now, scope=intake.name)
    if problem == REPLAYED:
        raise HTTPException(409, REPLAYED)
    if problem:
        raise _unauthorized(problem)
    return intake


async def _read_body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
    return body


def _seen(db: Session, key: str, now: datetime) -> bool:
    if db.get(IntakeReceipt, key) is not None:
        return True
    db.add(IntakeReceipt(key=key, received_at=now))
    return False


async def _store(ctx: Any, db: Session, source: str, base_id: str, events: list[Any], now: datetime) -> int:
    envelopes = [EventEnvelope(event_id=f"{source}:{base_id}:{i}", event=ev) for i, ev in enumerate(events)]
    stored = sum(ingest(db, env, source=source, now=now) for env in envelopes)
    db.commit()
    for env in envelopes:
        await ctx.publish(env)
    return stored


class IntakeResult(BaseModel):
    duplicate: bool
    events: int


@router.post("/api/v1/csms/events", response_model=IntakeResult)
async def csms_event(request: Request, ctx: Ctx, db: DbSession) -> IntakeResult:
    """A CitrineOS-style raw-frame webhook or one event in our own JSON form (see module docs)."""
    now = ctx.clock()
    body = await _read_body(request)
    intake = authenticate_csms(request, body, runtime_settings.effective_intakes(ctx, db), db, now)
    try:
        form, parsed = parse_body(body)
        if form == "own":
            event_id, event = own_event(parsed)
            events = [event]
        else:
            event_id = str(parsed.get("id", ""))
            if not event_id:
                raise IntakeError("id: required")
    except IntakeError as exc:
        db.rollback()
        raise HTTPException(422, str(exc)) from None
    source = f"csms:{intake.name}"
    if _seen(db, f"{intake.name}:id:{event_id}"[:200], now):
        db.commit()  # keep the signature receipt: a replay of this request stays refused
        return IntakeResult(duplicate=True, events=0)
    if form == "citrine":
        station = parsed.get("stationId") if isinstance(parsed, dict) else None
        decoder = _shared_decoder(db, station, now) if isinstance(station, str) and 0 < len(station) <= 64 else None
        try:
            _, events = citrine_events(parsed, decoder or OcppDecoder(), now)
        except IntakeError as exc:
            db.rollback()
            raise HTTPException(422, str(exc)) from None
        if decoder is not None:
            _keep_decoder(ctx, db, decoder, str(station), now)
    return IntakeResult(duplicate=False, events=await _store(ctx, db, source, event_id, events, now))


def _shared_decoder(db: Session, station: str, now: datetime) -> OcppDecoder:
    """A decoder holding this charger's stored state, its row locked until the request commits: frames
    of one charger are decoded one at a time, on whichever instance they reach."""
    table = IntakeDecoderState.__table__
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    db.execute(insert(table).values(charge_point_id=station, state={}, updated_at=now)
               .on_conflict_do_nothing(index_elements=["charge_point_id"]))
    row = db.exec(select(IntakeDecoderState).where(IntakeDecoderState.charge_point_id == station)
                  .with_for_update()).one()
    decoder = OcppDecoder()
    decoder.import_state(station, row.state)
    return decoder


def _keep_decoder(ctx: Any, db: Session, decoder: OcppDecoder, station: str, now: datetime) -> None:
    row = db.get(IntakeDecoderState, station)
    if row is not None:
        row.state, row.updated_at = decoder.export_state(station), now
        db.add(row)
    totals = ctx.intake_decoder().stats  # this instance's counters (metrics)
    for f in dataclasses.fields(decoder.stats):
        setattr(totals, f.name, getattr(totals, f.name) + getattr(decoder.stats, f.name))


def _ocpi(data: Any = None, status: int = 1000, message: str = "Success", http: int = 200, now=None) -> JSONResponse:
    body = {"status_code": status, "status_message": message, "timestamp": (now or datetime.now()).isoformat()}
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=http)


async def _ocpi_session(request: Request, ctx: Any, db: Session, cc: str, party: str, session_id: str,
                        partial: bool) -> JSONResponse:
    now = ctx.clock()
    body = await _read_body(request)
    intake = authenticate_csms(request, body, runtime_settings.effective_intakes(ctx, db), db, now)
    # OCPI ids are CiString: printable ASCII (a NUL byte cannot even be looked up in PostgreSQL).
    if len(cc) != 2 or len(party) != 3 or not session_id or len(session_id) > 36 or not all(
            part.isascii() and part.isprintable() for part in (cc, party, session_id)):
        return _ocpi(status=2001, message="bad country_code, party_id or session_id", http=400, now=now)
    key = f"{intake.name}:{cc.upper()}:{party.upper()}:{session_id}"
    row = db.get(OcpiSessionRow, key)
    try:
        event_id, events, merged = ocpi_session(strictjson.loads(body or b"null"), session_id, partial=partial,
                                                known=row.data if row else None)
    except (IntakeError, ValueError) as exc:
        db.rollback()
        return _ocpi(status=2001, message=str(exc), http=400, now=now)
    if _seen(db, f"{intake.name}:id:{key}:{event_id}"[:200], now):
        db.commit()
        return _ocpi(now=now)
    row = row or OcpiSessionRow(key=key, data={}, updated_at=now)
    row.data, row.updated_at = merged, now
    db.add(row)
    await _store(ctx, db, f"ocpi:{intake.name}", f"{key}:{event_id}", events, now)
    return _ocpi(now=now)


@router.put("/ocpi/2.2.1/sessions/{cc}/{party}/{session_id}", include_in_schema=True)
async def ocpi_put(cc: str, party: str, session_id: str, request: Request, ctx: Ctx, db: DbSession) -> JSONResponse:
    return await _ocpi_session(request, ctx, db, cc, party, session_id, partial=False)


@router.patch("/ocpi/2.2.1/sessions/{cc}/{party}/{session_id}", include_in_schema=True)
async def ocpi_patch(cc: str, party: str, session_id: str, request: Request, ctx: Ctx, db: DbSession) -> JSONResponse:
    return await _ocpi_session(request, ctx, db, cc, party, session_id, partial=True)


# --- state ----------------------------------------------------------------------------------


class ConnectorOut(BaseModel):
    evse_id: int
    connector_id: int
    status: str
    transaction_id: str | None
    updated_at: datetime


class TransactionOut(BaseModel):
    charge_point_id: str
    transaction_id: str
    evse_id: int | None
    connector_id: int | None
    started_at: datetime
    ended_at: datetime | None
    charging_state: str | None
    idle_since: datetime | None
    energy_wh: float | None


class ChargerOut(BaseModel):
    id: str
    connected: bool
    protocol: str | None
    last_seen: datetime
    connectors: list[ConnectorOut]
    active_transactions: list[TransactionOut]


@router.get("/api/v1/chargers", response_model=list[ChargerOut])
def list_chargers(db: DbSession, _: Viewer) -> list[ChargerOut]:
    chargers = list(db.exec(select(Charger).order_by(Charger.id)))
    connectors = list(db.exec(select(ConnectorState)))
    active = list(db.exec(select(Transaction).where(Transaction.ended_at == None)))  # noqa: E711
    out = []
    for ch in chargers:
        out.append(ChargerOut(
            id=ch.id, connected=ch.connected, protocol=ch.protocol, last_seen=ch.last_seen,
            connectors=[ConnectorOut.model_validate(c, from_attributes=True) for c in connectors
                        if c.charge_point_id == ch.id],
            active_transactions=[TransactionOut.model_validate(t, from_attributes=True) for t in active
                                 if t.charge_point_id == ch.id],
        ))
    return out


def query_transactions(db: Session, *, active: bool | None = None, charge_point_id: str | None = None,
                       since: datetime | None = None, until: datetime | None = None, cursor: str | None = None,
                       limit: int = 100) -> tuple[list[Transaction], str | None]:
    """One page of transactions, newest start first (ties by charge point, then transaction id), and the
    next page's cursor."""
    q = select(Transaction).order_by(Transaction.started_at.desc(),  # type: ignore[attr-defined]
                                     Transaction.charge_point_id.desc(),  # type: ignore[attr-defined]
                                     Transaction.transaction_id.desc())  # type: ignore[attr-defined]
    if active is True:
        q = q.where(Transaction.ended_at == None)  # noqa: E711
    elif active is False:
        q = q.where(Transaction.ended_at != None)  # noqa: E711
    if charge_point_id:
        q = q.where(Transaction.charge_point_id == charge_point_id)
    if since:
        q = q.where(Transaction.started_at >= as_utc(since))
    if until:
        q = q.where(Transaction.started_at < as_utc(until))
    if cursor:
        at, cp, tx = decode_cursor(cursor, 3)
        q = q.where(after_key([Transaction.started_at, Transaction.charge_point_id, Transaction.transaction_id],
                              [cursor_time(at), cursor_str(cp), cursor_str(tx)]))
    rows = list(db.exec(q.limit(limit + 1)))
    last = rows[limit - 1] if len(rows) > limit else None
    nxt = encode_cursor(last.started_at, last.charge_point_id, last.transaction_id) if last else None
    return rows[:limit], nxt


@router.get("/api/v1/transactions", response_model=list[TransactionOut])
def list_transactions(
    request: Request, response: Response, db: DbSession, _: Viewer,
    active: Annotated[bool | None, Query(description="true: still running (not ended); false: ended")] = None,
    charge_point_id: str | None = None,
    since: Annotated[
        datetime | None, Query(description="Started at or after (ISO 8601; UTC if no zone)"), SaneTime
    ] = None,
    until: Annotated[datetime | None, Query(description="Started before (ISO 8601; no zone: UTC)"), SaneTime] = None,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, description=CURSOR_HELP)] = None,
    limit: Annotated[int, Query(description="Page size, 1 to 500 (values outside are clamped)")] = 100,
) -> list[Transaction]:
    """Newest start first. More pages: `X-Next-Cursor` and `Link: <...>; rel="next"` headers."""
    rows, nxt = query_transactions(db, active=active, charge_point_id=charge_point_id, since=since, until=until,
                                   cursor=cursor, limit=max(1, min(limit, 500)))
    set_next_headers(request, response, nxt)
    return rows
