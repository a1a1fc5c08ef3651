"""What `decide` works on: the bay state, its inputs and its actions (frozen pydantic models), and
the small helpers every rule family shares."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from enforcement.lists import (
    BlacklistEntry,
    WhitelistEntry,
)
from enforcement.rules import Rules
from models.events import (
    CameraStateChanged,
    ChargerConnection,
    ChargingIdle,
    ChargingSuspended,
    ConnectorAvailable,
    PlateRead,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
    VehicleArrived,
    VehicleDeparted,
    VehicleStillPresent,
)

TimerKind = Literal["overstay", "idle", "no_charging", "presence_check"]
ViolationKind = Literal["idle", "overstay", "no_charging", "return_ban"]
AlertKind = Literal["blacklist", "return_ban", "camera_down", "unknown_bay"]

_DOWN_STATES = frozenset({"starting", "reconnecting", "stopped", "failed"})
_UNPLUG_END_REASONS = frozenset({"EVDisconnected"})  # 1.6 and 2.0.1 spell it the same
_MEMORY = 32  # closed presences / transactions remembered per bay, for duplicate detection
_TIMER_ORDER = {"presence_check": 0, "no_charging": 1, "idle": 2, "overstay": 3}  # same due: car gone first
_PRIORITY = {"return_ban": 6, "camera_down": 4, "unknown_bay": 3}  # higher is more urgent


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- state -------------------------------------------------------------------------------------


class TimelineEntry(_Frozen):
    at: AwareDatetime
    what: str
    detail: str = ""


class TxRef(_Frozen):
    charge_point_id: str
    transaction_id: str


class Outage(_Frozen):
    start: AwareDatetime
    end: AwareDatetime | None = None


class Violation(_Frozen):
    violation_id: str
    kind: ViolationKind
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    needs_review: bool
    review_reason: str | None = None


class Visit(_Frozen):
    """One car's stay in one bay, from the first camera arrival to its departure."""

    visit_id: str
    bay_id: str
    presence_id: str = Field(description="Current camera presence; a camera restart may add more.")
    presence_ids: tuple[str, ...]
    plate: str | None = Field(description="Normalised, after fuzzy correction; None if unreadable.")
    plate_read: str | None = Field(description="Normalised, as the camera read it.")
    plate_confidence: float
    arrived_at: AwareDatetime
    last_seen: AwareDatetime
    departed_at: AwareDatetime | None = None
    close_reason: str | None = None
    tx: TxRef | None = None
    plugged: bool = False
    charging: bool = False
    plugged_at: AwareDatetime | None = None
    idle_since: AwareDatetime | None = Field(None, description="Start of the current idle episode.")
    idle_fee_from: AwareDatetime | None = Field(None, description="Billing start of the current episode.")
    idle_billed_min: int = Field(0, description="Idle minutes billed by finished episodes.")
    charging_complete_at: AwareDatetime | None = None
    unplugged_at: AwareDatetime | None = None
    rules: Rules = Field(description="Snapshot taken at arrival; later rule changes do not apply.")
    exempt: bool = False
    exempt_reason: str | None = None
    blacklisted: bool = False
    warned_idle_since: AwareDatetime | None = Field(None, description="Idle episode already warned about.")
    violations: tuple[Violation, ...] = ()
    outage_since: AwareDatetime | None = Field(None, description="Unresolved camera outage after last_seen.")
    outages: tuple[Outage, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()


class ChargerTx(_Frozen):
    """The transaction on the bay's EVSE as the charger reports it, with or without a car."""

    charge_point_id: str
    transaction_id: str
    started_at: AwareDatetime
    last_at: AwareDatetime = Field(description="Newest charger event applied; older ones are stale.")
    plugged: bool = True
    charging: bool = False
    suspended: bool = False
    idle_since: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    visit_id: str | None = Field(None, description="Visit it is linked to; never re-linked to another.")

    @property
    def key(self) -> str:
        return f"{self.charge_point_id}/{self.transaction_id}"


class Timer(_Frozen):
    timer_id: str
    kind: TimerKind
    visit_id: str
    due_at: AwareDatetime
    held: bool = Field(False, description="Fell due during a camera outage; waits for a sighting.")


class Overstay(_Frozen):
    """An overstay that bans its plate from a new visit until `until`."""

    plate: str
    visit_id: str
    bay_id: str
    ended_at: AwareDatetime
    until: AwareDatetime
    needs_review: bool = False


class CameraStatus(_Frozen):
    camera: str
    state: str
    at: AwareDatetime


class BayState(_Frozen):
    """Everything decide() knows about one bay (or access point) between two events."""

    bay_id: str
    kind: Literal["bay", "access"] = Field("bay", description="'access': a gate camera that admits or refuses.")
    charge_point_id: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None
    cameras: tuple[str, ...] = ()
    visit: Visit | None = None
    tx: ChargerTx | None = None
    timers: tuple[Timer, ...] = ()
    recent_overstays: tuple[Overstay, ...] = ()
    camera_status: tuple[CameraStatus, ...] = ()
    closed_presences: tuple[str, ...] = ()
    closed_txs: tuple[str, ...] = ()
    # When each remembered transaction ended: a start of the same id after that is a new transaction
    # (a CSMS that restarted its counter, a charger after a factory reset), not a duplicate.
    closed_tx_ends: dict[str, AwareDatetime] = Field(default_factory=dict)
    last_departed_at: AwareDatetime | None = None

    def owns_evse(self, charge_point_id: str, evse_id: int | None, connector_id: int | None) -> bool:
        """Whether a charger event is about this bay's outlet.

        A field missing on either side is not compared (1.6 sends only connector ids, 2.0.1 an
        EVSE id); at least one must be compared, unless the bay names neither (single-outlet charger).
        """
        if self.charge_point_id is None or charge_point_id != self.charge_point_id:
            return False
        if self.evse_id is None and self.connector_id is None:
            return True
        compared = False
        for mine, theirs in ((self.evse_id, evse_id), (self.connector_id, connector_id)):
            if mine is not None and theirs is not None:
                if mine != theirs:
                    return False
                compared = True
        return compared

    @property
    def unobserved(self) -> bool:
        """True when the bay has cameras and every one of them is down."""
        if not self.cameras:
            return False
        down = {c.camera for c in self.camera_status if c.state in _DOWN_STATES}
        return all(c in down for c in self.cameras)


# --- inputs ------------------------------------------------------------------------------------


class TimerDue(_Frozen):
    """The scheduler's report that a timer fell due; it may come late, never early."""

    timer_id: str
    kind: TimerKind
    visit_id: str
    due_at: AwareDatetime


class DecideContext(_Frozen):
    """What the service looks up for a decision: resolved rules, lists, registry, occupancy."""

    rules: Rules = Rules()
    whitelist: tuple[WhitelistEntry, ...] = ()
    blacklist: tuple[BlacklistEntry, ...] = ()
    known_plates: tuple[str, ...] = Field((), description="Registered plates a misread may be corrected to.")
    occupancy_pct: float | None = Field(None, ge=0, le=100, description="Site occupancy now; None: unknown.")
    recent_overstays: tuple[Overstay, ...] = Field((), description="Site-wide overstays, for return bans.")


BayEvent = (
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
    | TimerDue
)


# --- actions -----------------------------------------------------------------------------------


class OpenVisit(_Frozen):
    action: Literal["open_visit"] = "open_visit"
    visit: Visit


class CloseVisit(_Frozen):
    action: Literal["close_visit"] = "close_visit"
    visit: Visit = Field(description="Final snapshot: departed_at, close_reason and ended violations set.")


class LinkTransaction(_Frozen):
    action: Literal["link_transaction"] = "link_transaction"
    visit_id: str
    charge_point_id: str
    transaction_id: str
    at: AwareDatetime


class AppendTimeline(_Frozen):
    action: Literal["append_timeline"] = "append_timeline"
    visit_id: str
    entry: TimelineEntry


class ScheduleTimer(_Frozen):
    action: Literal["schedule_timer"] = "schedule_timer"
    timer_id: str
    kind: TimerKind
    visit_id: str
    due_at: AwareDatetime


class CancelTimer(_Frozen):
    action: Literal["cancel_timer"] = "cancel_timer"
    timer_id: str
    visit_id: str


class RaiseAlert(_Frozen):
    action: Literal["raise_alert"] = "raise_alert"
    kind: AlertKind
    priority: int = Field(ge=0, le=9, description="Higher is more urgent.")
    bay_id: str | None
    plate: str | None
    visit_id: str | None = None
    at: AwareDatetime
    detail: str = ""


class SendWarning(_Frozen):
    action: Literal["send_warning"] = "send_warning"
    visit_id: str
    kind: Literal["idle"] = "idle"
    fee_starts_at: AwareDatetime
    fee_per_min: Decimal
    fee_cap: Decimal | None = None
    currency: str
    plate: str | None
    tx: TxRef | None = None


class RaiseViolation(_Frozen):
    action: Literal["raise_violation"] = "raise_violation"
    violation_id: str
    visit_id: str
    kind: ViolationKind
    started_at: AwareDatetime
    amount_so_far: Decimal
    currency: str
    plate: str | None
    needs_review: bool
    review_reason: str | None = None


class FinalisePenalty(_Frozen):
    action: Literal["finalise_penalty"] = "finalise_penalty"
    violation_id: str
    visit_id: str
    kind: ViolationKind
    started_at: AwareDatetime
    ended_at: AwareDatetime
    minutes: int | None = Field(description="Billed whole minutes; None for flat fees.")
    amount: Decimal
    currency: str
    plate: str | None
    needs_review: bool
    review_reason: str | None = None
    voided: bool = Field(False, description="Started after the car had left (departure reported late).")


class AccessDecision(_Frozen):
    action: Literal["access_decision"] = "access_decision"
    bay_id: str
    presence_id: str
    plate: str | None
    accepted: bool
    reason: str
    at: AwareDatetime


Action = Annotated[
    OpenVisit
    | CloseVisit
    | LinkTransaction
    | AppendTimeline
    | ScheduleTimer
    | CancelTimer
    | RaiseAlert
    | SendWarning
    | RaiseViolation
    | FinalisePenalty
    | AccessDecision,
    Field(discriminator="action"),
]


class Decision(_Frozen):
    new_state: BayState
    actions: tuple[Action, ...] = ()


# --- the run: a mutable scratchpad that lives for one decide() call ----------------------------


def _utc(value: datetime) -> datetime:
    # Producers stamp UTC; a naive value (VehicleDeparted.first_seen is a plain datetime) is read as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _remember(seq: tuple[str, ...], item: str) -> tuple[str, ...]:
    return seq if item in seq else (*seq, item)[-_MEMORY:]


def _timer_order(tm: Timer) -> tuple[datetime, int, str]:
    return (tm.due_at, _TIMER_ORDER[tm.kind], tm.timer_id)


