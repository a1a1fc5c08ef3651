"""Frozen domain events: the only shape in which camera and charger facts travel.

Producers (`anpr`, `ocpp_link`) build these at their boundary; `enforcement` consumes them.
They are pydantic models so an edge worker can post them as JSON and the centre can
validate them with the same classes (`EventEnvelope`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# EVSE and connector numbers are small; anything past a 32-bit column is refused at the boundary (422),
# not left to overflow the database (500, and an edge client that retries forever).
OutletNumber = Annotated[int | None, Field(ge=0, le=2**31 - 1)]


class _Event(BaseModel):
    # NaN and Infinity (which Python's JSON parser lets through) cannot be stored in PostgreSQL's JSON.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    at: AwareDatetime = Field(description="When it happened (UTC, source clock).")


class Evidence(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    frame_path: str | None = Field(None, description="Full frame JPEG, relative to the evidence dir.")
    crop_path: str | None = Field(None, description="Plate crop JPEG, relative to the evidence dir.")


# --- camera side -------------------------------------------------------------------------


class PlateRead(_Event):
    kind: Literal["plate_read"] = "plate_read"
    camera: str
    bay_id: str | None
    plate: str | None = Field(description="Normalised A-Z0-9 text, None if unreadable.")
    raw_text: str = ""
    confidence: float = Field(ge=0, le=1)
    char_confidences: tuple[float, ...] = ()
    box: tuple[float, float, float, float] | None = None
    accepted: bool = True
    reject_reason: str | None = None
    evidence: Evidence = Evidence()


class VehicleArrived(_Event):
    kind: Literal["vehicle_arrived"] = "vehicle_arrived"
    presence_id: str
    camera: str
    bay_id: str
    plate: str | None
    confidence: float = Field(ge=0, le=1)
    char_confidences: tuple[float, ...] = ()
    evidence: Evidence = Evidence()


class VehicleStillPresent(_Event):
    kind: Literal["vehicle_still_present"] = "vehicle_still_present"
    presence_id: str
    camera: str
    bay_id: str
    plate: str | None
    confidence: float = Field(ge=0, le=1)
    since: datetime


class VehicleDeparted(_Event):
    kind: Literal["vehicle_departed"] = "vehicle_departed"
    presence_id: str
    camera: str
    bay_id: str
    plate: str | None
    first_seen: datetime
    last_seen: datetime


class CameraStateChanged(_Event):
    kind: Literal["camera_state"] = "camera_state"
    camera: str
    state: Literal["starting", "running", "reconnecting", "stopped", "failed"]
    detail: str = ""


# --- charger side ------------------------------------------------------------------------


class _TxEvent(_Event):
    charge_point_id: str
    transaction_id: str
    evse_id: OutletNumber = None
    connector_id: OutletNumber = None


class TransactionStarted(_TxEvent):
    kind: Literal["transaction_started"] = "transaction_started"
    id_token_hash: str | None = Field(None, description="SHA-256 of the id token, never the token.")
    meter_start_wh: float | None = None


class TransactionUpdated(_TxEvent):
    kind: Literal["transaction_updated"] = "transaction_updated"
    charging_state: str | None = None
    energy_wh: float | None = None


class ChargingSuspended(_TxEvent):
    kind: Literal["charging_suspended"] = "charging_suspended"
    reason: str = ""


class ChargingIdle(_TxEvent):
    kind: Literal["charging_idle"] = "charging_idle"
    reason: str = ""


class TransactionEnded(_TxEvent):
    kind: Literal["transaction_ended"] = "transaction_ended"
    reason: str = ""
    energy_wh: float | None = None


class ConnectorAvailable(_Event):
    kind: Literal["connector_available"] = "connector_available"
    charge_point_id: str
    evse_id: OutletNumber = None
    connector_id: OutletNumber = None


class ChargerConnection(_Event):
    kind: Literal["charger_connection"] = "charger_connection"
    charge_point_id: str
    connected: bool
    protocol: str | None = None


class RelayUpstreamChanged(_Event):
    """The OCPP relay found a CSMS upstream unreachable (a charger's connection could not be forwarded), or
    reachable again. Emitted on the change only, not for every charger that tried."""

    kind: Literal["relay_upstream"] = "relay_upstream"
    upstream: str = Field(max_length=300, description="The upstream's URL, credentials redacted.")
    up: bool
    detail: str = Field("", max_length=500)
    charge_point_id: str | None = Field(None, description="The charger whose connection noticed the change.")


DomainEvent = Annotated[
    PlateRead
    | VehicleArrived
    | VehicleStillPresent
    | VehicleDeparted
    | CameraStateChanged
    | TransactionStarted
    | TransactionUpdated
    | ChargingSuspended
    | ChargingIdle
    | TransactionEnded
    | ConnectorAvailable
    | ChargerConnection
    | RelayUpstreamChanged,
    Field(discriminator="kind"),
]


class EventEnvelope(BaseModel):
    """What travels over the wire (edge worker -> centre): an id for idempotency and the event."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: str = Field(min_length=8, max_length=128)
    event: DomainEvent


def event_subject(event: _Event) -> str | None:
    """What a device token must be scoped for to post this event: `camera:NAME` or `charger:ID`.

    None for events only Baywarden itself raises (relay upstream changes): no token may post them.
    """
    if isinstance(event, RelayUpstreamChanged):
        return None
    camera = getattr(event, "camera", None)
    if camera is not None:
        return f"camera:{camera}"
    charger = getattr(event, "charge_point_id", None)
    if charger is not None:
        return f"charger:{charger}"
    return None
