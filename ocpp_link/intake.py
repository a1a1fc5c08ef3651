"""Turning what a CSMS posts into domain events: three accepted body forms, no I/O here.

1. CitrineOS-style webhook carrying a raw OCPP-J frame and its origin, decoded by the same
   tolerant decoder as the relay:
   `{"id": "...", "stationId": "CP1", "origin": "cs"|"csms", "timestamp": "...", "message": [2, ...]}`
   (`message` may also be the frame as a JSON string).
2. OCPI 2.2.1 `Session` objects (`PUT`/`PATCH /ocpi/2.2.1/sessions/{cc}/{party}/{session_id}`):
   status ACTIVE/COMPLETED, `evse_uid` (used as the charge point id), `connector_id`, `kwh`.
3. Our own JSON form (one event per request):
   `{"event_id": "...", "type": "transaction_started"|"transaction_updated"|"charging_suspended"|
   "charging_idle"|"transaction_ended"|"connector_available", "at": ISO-8601 with zone,
   "charge_point_id": "...", "transaction_id": "...", "evse_id": 1, "connector_id": 1,
   "charging_state": "...", "energy_wh": 12.5, "id_token": "..." (hashed on arrival), "reason": "..."}`
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from models import strictjson
from models.events import (
    ChargingIdle,
    ChargingSuspended,
    ConnectorAvailable,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
)
from ocpp_link.decoder import ChargerEvent, OcppDecoder, hash_id_token


class IntakeError(ValueError):
    """The body is not one of the accepted forms; the message says why (for a 422)."""


class CitrineMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=128)
    stationId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:*+|@-]+$")
    origin: Literal["cs", "csms"]
    timestamp: AwareDatetime | None = None
    message: list[Any] | str


class OwnEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(min_length=1, max_length=128)
    type: Literal[
        "transaction_started",
        "transaction_updated",
        "charging_suspended",
        "charging_idle",
        "transaction_ended",
        "connector_available",
    ]
    at: AwareDatetime
    charge_point_id: str = Field(min_length=1, max_length=64)
    transaction_id: str | None = Field(None, max_length=64)
    evse_id: int | None = Field(None, ge=0, le=2**31 - 1)
    connector_id: int | None = Field(None, ge=0, le=2**31 - 1)
    charging_state: str | None = Field(None, max_length=32)
    energy_wh: float | None = Field(None, ge=0)
    id_token: str | None = Field(None, max_length=256)
    reason: str = Field("", max_length=64)


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5])


def parse_body(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Return ("citrine"|"own", body) or raise IntakeError."""
    try:
        body = strictjson.loads(raw)
    except ValueError as exc:
        raise IntakeError(f"body is not JSON we can store ({str(exc)[:80]})") from None
    if not isinstance(body, dict):
        raise IntakeError("body must be a JSON object")
    if "message" in body and "origin" in body:
        return "citrine", body
    if "type" in body and "event_id" in body:
        return "own", body
    raise IntakeError("unknown body form: expected a CitrineOS-style message or our own event JSON")


def citrine_events(body: dict[str, Any], decoder: OcppDecoder, received_at: datetime) -> tuple[str, list[ChargerEvent]]:
    """Feed the carried frame to the decoder; return the message id and the events it implies."""
    try:
        msg = CitrineMessage.model_validate(body)
    except ValidationError as exc:
        raise IntakeError(_errors(exc)) from None
    frame = msg.message if isinstance(msg.message, str) else json.dumps(msg.message)
    at = msg.timestamp or received_at
    return msg.id, decoder.decode(msg.stationId, msg.origin, frame, at)


def own_event(body: dict[str, Any], id_token_key: bytes | None = None) -> tuple[str, ChargerEvent]:
    try:
        ev = OwnEvent.model_validate(body)
    except ValidationError as exc:
        raise IntakeError(_errors(exc)) from None
    common = {
        "at": ev.at.astimezone(UTC),
        "charge_point_id": ev.charge_point_id,
        "evse_id": ev.evse_id,
        "connector_id": ev.connector_id,
    }
    if ev.type == "connector_available":
        return ev.event_id, ConnectorAvailable(**common)
    if not ev.transaction_id:
        raise IntakeError(f"transaction_id: required for {ev.type}")
    common["transaction_id"] = ev.transaction_id
    if ev.type == "transaction_started":
        token_hash = hash_id_token(ev.id_token, id_token_key) if ev.id_token else None
        return ev.event_id, TransactionStarted(**common, id_token_hash=token_hash)
    if ev.type == "transaction_updated":
        return ev.event_id, TransactionUpdated(**common, charging_state=ev.charging_state, energy_wh=ev.energy_wh)
    if ev.type == "charging_suspended":
        return ev.event_id, ChargingSuspended(**common, reason=ev.reason)
    if ev.type == "charging_idle":
        return ev.event_id, ChargingIdle(**common, reason=ev.reason)
    return ev.event_id, TransactionEnded(**common, reason=ev.reason, energy_wh=ev.energy_wh)


class OcpiSession(BaseModel):
    """The OCPI 2.2.1 Session fields we use; others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    country_code: str | None = Field(None, min_length=2, max_length=2)
    party_id: str | None = Field(None, min_length=3, max_length=3)
    id: str | None = Field(None, max_length=36)
    start_date_time: AwareDatetime | None = None
    end_date_time: AwareDatetime | None = None
    kwh: float | None = Field(None, ge=0)
    location_id: str | None = Field(None, max_length=36)
    evse_uid: str | None = Field(None, min_length=1, max_length=36)
    connector_id: str | None = Field(None, max_length=36)
    status: Literal["ACTIVE", "COMPLETED", "INVALID", "PENDING", "RESERVATION"] | None = None
    last_updated: AwareDatetime | None = None


def ocpi_session(
    body: Any, session_id: str, *, partial: bool, known: dict[str, Any] | None
) -> tuple[str, list[ChargerEvent], dict[str, Any]]:
    """Map a PUT (full) or PATCH (partial) Session to events.

    `known` is what we stored for this session before (None if new); returns the event id, the
    events, and the merged session to remember.
    """
    if not isinstance(body, dict):
        raise IntakeError("body must be a JSON object")
    try:
        sess = OcpiSession.model_validate(body)
    except ValidationError as exc:
        raise IntakeError(_errors(exc)) from None
    incoming = sess.model_dump(mode="json", exclude_unset=True)
    if partial and known is None:
        raise IntakeError("PATCH for a session we have never seen; send the whole Session with PUT first")
    merged = {**(known or {}), **incoming}
    if not partial:
        for field in ("start_date_time", "evse_uid", "status", "last_updated"):
            if field not in incoming:
                raise IntakeError(f"{field}: required in a full Session (PUT)")
    if not merged.get("last_updated"):
        raise IntakeError("last_updated: required")
    s = OcpiSession.model_validate(merged)
    # A PATCH may null a field the PUT gave; a session without these cannot be mapped.
    for field in ("start_date_time", "evse_uid", "status", "last_updated"):
        if getattr(s, field) is None:
            raise IntakeError(f"{field}: must not be null")
    assert s.evse_uid and s.last_updated and s.start_date_time and s.status  # for the type checker
    cid = s.connector_id or ""
    connector = int(cid) if cid.isascii() and cid.isdigit() and len(cid) <= 9 else None
    common = {"charge_point_id": s.evse_uid, "transaction_id": session_id, "connector_id": connector}
    events: list[ChargerEvent] = []
    if known is None and s.status in ("ACTIVE", "COMPLETED"):
        events.append(TransactionStarted(at=s.start_date_time, **common))
    energy = s.kwh * 1000 if s.kwh is not None else None
    if s.status == "ACTIVE" and known is not None:
        events.append(TransactionUpdated(at=s.last_updated, energy_wh=energy, **common))
    if s.status in ("COMPLETED", "INVALID") and (known or {}).get("status") not in ("COMPLETED", "INVALID"):
        end = s.end_date_time or s.last_updated
        events.append(TransactionEnded(at=end, reason=s.status.lower(), energy_wh=energy, **common))
    return f"ocpi:{session_id}:{s.last_updated.isoformat()}", events, merged
