"""The pure enforcement core: `decide(state, event, now, ctx) -> Decision(new_state, actions)`.

No I/O, no clock reads, no randomness: the result depends only on the arguments, so a service that
stores `BayState` and applies `actions` in one transaction can crash and replay without losing or
doubling anything. Every type is a frozen pydantic model (`model_dump(mode="json")` /
`model_validate(...)` round-trip exactly).

Semantics (the choices the tests pin down)
-----------------------------------------
* Time. An event is applied at its own timestamp `at`, clamped to `now` when a source clock runs
  ahead. `now` is used only for that clamp, to refuse a `TimerDue` that is not due yet, as the
  "so far" point of `RaiseViolation.amount_so_far`, and to re-check a low occupancy later.
* Ids are derived, never drawn: visit `"{bay}/{presence}"`, violation `"{visit}/{kind}"`, timer
  `"{visit}/{kind}/{due, UTC ISO}"`. Re-scheduling a timer reproduces the same id.
* Timers. Before and after an event at time T, every pending timer of the open visit due at or
  before T fires, oldest first, stamped with its own due time. So a violation whose timer the
  scheduler never delivered (service down) still starts at its TRUE due time, whichever of the
  late `TimerDue` or the next event comes first; the other one then finds nothing left to do.
  A visit closing at E fires what was due by E and cancels the rest.
* Idempotency. Duplicates change nothing: a presence already open or closed, a transaction
  already known or ended, a state the charger is already in, a timer no longer pending.
* Out of order. Charger events older than the last one applied to the same transaction are
  ignored (history is never rewritten; the benefit of the doubt goes to the driver), except
  `TransactionEnded`, which is final; an event of another transaction older than the outlet's
  current one is ignored too. An arrival older than the open visit or than the last
  departure is ignored. A departure whose arrival never came builds the whole visit from
  `first_seen`/`last_seen`; the late arrival is then a duplicate.
* A visit ends at the car's last sighting (`VehicleDeparted.last_seen`), never at a later
  report time. A new arrival while a visit is open closes the old visit first, at its last sighting.
* Cameras. Silence is not departure: missing heartbeats change nothing (a parked car may not be
  re-read for a long time). When every camera of the bay is down (`starting`, `reconnecting`,
  `stopped`, `failed`) an outage starts. A timer falling due after an outage that has not been
  followed by a sighting is *held*, unless the car is plugged in (the cable proves presence). A
  later sighting fires the held timers at their true due times, marked for review. When the
  camera is back (or the cable comes out) and the car is not seen within `camera_recover_min`, the
  visit closes at its last evidence: last sighting or unplug (`not_seen_after_camera_outage`).
  A restarted worker gives the same car a new presence id: after an outage, a new presence with
  the same plate (within `fuzzy_distance`) continues the visit; with a plate unreadable on either
  side, only a cable still plugged in makes it the same car.
* Idle fee: from idle start (`ChargingIdle`, or `TransactionEnded` with the cable still in) plus
  the grace, until charging resumes, unplug or departure; episodes add up, one cap per visit.
  `ChargingSuspended` (the station paused) never starts idle time. `ChargingIdle(reason="Idle")`
  means no EV connected: an unplug.
* Gating. A violation starts only inside the schedule and at or above the occupancy threshold;
  otherwise its timer moves to the next schedule start, or `occupancy_recheck_min` after now.
  A return ban outside them is only noted. Whitelisted visits get no timers, warnings or penalties.
* Each violation kind is raised at most once per visit and finalised exactly once, when the visit
  closes. A violation that started after the car had left (a late departure report) is voided.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from enforcement.lists import (
    BlacklistEntry,
    WhitelistEntry,
    correct_plate,
    match_plate,
    normalise_plate,
    plate_distance,
)
from enforcement.rules import CENT, Rules, fee_for_minutes, whole_minutes
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


# --- public functions --------------------------------------------------------------------------


def decide(state: BayState, event: BayEvent, now: datetime, ctx: DecideContext) -> Decision:
    """Apply one event (or due timer) to one bay: the new state and the actions to carry out."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    run = _Run(state, ctx, now.astimezone(UTC))
    run.dispatch(event)
    return Decision(new_state=run.state, actions=tuple(run.out))


def unknown_bay_alert(event: VehicleArrived | VehicleStillPresent | VehicleDeparted | PlateRead) -> RaiseAlert:
    """The alert for a camera event naming a bay that has no BayState (a zone not configured)."""
    return RaiseAlert(
        kind="unknown_bay",
        priority=_PRIORITY["unknown_bay"],
        bay_id=event.bay_id,
        plate=normalise_plate(event.plate),
        at=event.at,
        detail=f"camera {event.camera} reports bay {event.bay_id!r}, which is not configured",
    )


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


class _Run:
    def __init__(self, state: BayState, ctx: DecideContext, now: datetime) -> None:
        self.state = state
        self.ctx = ctx
        self.now = now
        self.t = now  # time of the event being applied
        self.out: list[Action] = []

    # small state helpers ---------------------------------------------------------------------

    @property
    def visit(self) -> Visit | None:
        return self.state.visit

    def _set(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)

    def _visit_update(self, **changes: object) -> None:
        assert self.state.visit is not None
        self._set(visit=self.state.visit.model_copy(update=changes))

    def _open_visit(self) -> Visit:
        assert self.state.visit is not None
        return self.state.visit

    def note(self, at: datetime, what: str, detail: str = "") -> None:
        v = self._open_visit()
        entry = TimelineEntry(at=at, what=what, detail=detail)
        self._visit_update(timeline=(*v.timeline, entry))
        self.out.append(AppendTimeline(visit_id=v.visit_id, entry=entry))

    def _linked(self) -> Visit | None:
        v, tx = self.state.visit, self.state.tx
        return v if v is not None and tx is not None and tx.visit_id == v.visit_id else None

    # dispatch --------------------------------------------------------------------------------

    def dispatch(self, ev: BayEvent) -> None:
        if isinstance(ev, TimerDue):
            self.on_timer(ev)
            return
        self.t = min(_utc(ev.at), self.now)  # a source clock ahead of ours is not trusted
        t = self.t
        if isinstance(ev, CameraStateChanged):
            if self.state.kind == "bay":
                self.on_camera_state(ev, t)
        elif isinstance(ev, VehicleArrived | VehicleStillPresent | VehicleDeparted):
            if ev.bay_id != self.state.bay_id:
                return  # routed to the wrong bay: nothing here changes
            if self.state.kind == "access":
                if isinstance(ev, VehicleArrived):
                    self.on_access(ev, t)
            elif isinstance(ev, VehicleArrived):
                self._sighting(ev.presence_id, ev.plate, ev.confidence, t, t, "arrival")
            elif isinstance(ev, VehicleStillPresent):
                self.on_still_present(ev, t)
            else:
                self.on_departed(ev, t)
        elif self.state.kind == "access":
            return
        elif isinstance(ev, ConnectorAvailable):
            self.on_available(ev, t)
        elif isinstance(
            ev, TransactionStarted | TransactionUpdated | ChargingSuspended | ChargingIdle | TransactionEnded
        ):
            self.on_tx(ev, t)
        # PlateRead and ChargerConnection decide nothing: grouping and event timestamps carry them.

    # timers ----------------------------------------------------------------------------------

    def on_timer(self, ev: TimerDue) -> None:
        tm = next((x for x in self.state.timers if x.timer_id == ev.timer_id), None)
        if tm is None or tm.due_at > self.now:
            return  # fired, cancelled, or early: nothing to do
        v = self.visit
        if v is None or v.visit_id != tm.visit_id:
            self._set(timers=tuple(x for x in self.state.timers if x.timer_id != tm.timer_id))
            return
        self.advance(tm.due_at, self.now)

    def _schedule(self, kind: TimerKind, due: datetime) -> None:
        v = self._open_visit()
        tid = f"{v.visit_id}/{kind}/{_stamp(due)}"
        if any(x.timer_id == tid for x in self.state.timers):
            return
        self._set(timers=(*self.state.timers, Timer(timer_id=tid, kind=kind, visit_id=v.visit_id, due_at=due)))
        self.out.append(ScheduleTimer(timer_id=tid, kind=kind, visit_id=v.visit_id, due_at=due))

    def _cancel(self, kinds: set[str] | None = None) -> None:
        v = self._open_visit()
        drop = [x for x in self.state.timers if x.visit_id == v.visit_id and (kinds is None or x.kind in kinds)]
        if not drop:
            return
        ids = {x.timer_id for x in drop}
        self._set(timers=tuple(x for x in self.state.timers if x.timer_id not in ids))
        self.out.extend(CancelTimer(timer_id=x.timer_id, visit_id=x.visit_id) for x in drop)

    def advance(self, until: datetime, as_of: datetime) -> None:
        """Fire every timer of the open visit due by `until`, in due order, at its own due time."""
        while (v := self.visit) is not None:
            due = sorted(
                (x for x in self.state.timers if x.visit_id == v.visit_id and x.due_at <= until), key=_timer_order
            )
            fired = False
            for tm in due:
                covered, inferred = self._covered(tm)
                if covered:
                    self._set(timers=tuple(x for x in self.state.timers if x.timer_id != tm.timer_id))
                    self._fire(tm, inferred, as_of)
                    fired = True
                    break
                if not tm.held:
                    held = tm.model_copy(update={"held": True})
                    self._set(timers=tuple(held if x.timer_id == tm.timer_id else x for x in self.state.timers))
                    self.note(tm.due_at, f"{tm.kind}_held", "camera outage: waiting for a sighting of the car")
            if not fired:
                return

    def _covered(self, tm: Timer) -> tuple[bool, bool]:
        """(may fire, presence only inferred across an outage)."""
        v = self._open_visit()
        if tm.kind == "presence_check":
            return True, False
        if v.outage_since is not None and tm.due_at >= v.outage_since:
            return v.plugged and v.plugged_at is not None and v.plugged_at <= tm.due_at, False
        inferred = any(o.start <= tm.due_at and (o.end is None or tm.due_at < o.end) for o in v.outages)
        return True, inferred

    def _fire(self, tm: Timer, inferred: bool, as_of: datetime) -> None:
        v = self._open_visit()
        if tm.kind == "presence_check":
            if v.outage_since is not None and not v.plugged:
                # last evidence of the car: its last sighting, or the unplug if the cable outlived it
                end = max(v.last_seen, v.unplugged_at) if v.unplugged_at else v.last_seen
                self._close(end, "not_seen_after_camera_outage", sighting=False)
            return
        if v.exempt or (tm.kind == "idle" and v.idle_since is None):
            return
        if tm.kind == "no_charging" and (v.plugged or any(x.kind == "no_charging" for x in v.violations)):
            return
        verdict, later, why = self._gate(v.rules, tm.due_at)
        if verdict != "ok":
            self.note(tm.due_at, f"{tm.kind}_deferred" if later else f"{tm.kind}_not_enforced", why)
            if later is not None:
                self._schedule(tm.kind, later)
            return
        extra = ("camera outage: presence inferred from sightings around it",) if inferred else ()
        self._raise(cast(ViolationKind, tm.kind), tm.due_at, as_of, extra)  # presence_check returned above

    def _gate(self, rules: Rules, at: datetime) -> tuple[str, datetime | None, str]:
        """('ok' | 'defer' | 'drop', when to look again, why) for a violation starting at `at`."""
        if not rules.schedule.is_active(at):
            nxt = rules.schedule.next_start(at)
            return ("defer" if nxt else "drop"), nxt, "outside active hours"
        if rules.min_occupancy_pct is not None:
            occ = self.ctx.occupancy_pct
            if occ is None or occ < rules.min_occupancy_pct:
                # occupancy is a live figure: only a later look can change the answer
                later = max(at, self.now) + timedelta(minutes=rules.occupancy_recheck_min)
                shown = "unknown" if occ is None else f"{occ:g} %"
                return "defer", later, f"site occupancy {shown} below {rules.min_occupancy_pct:g} %"
        return "ok", None, ""

    # violations ------------------------------------------------------------------------------

    def _review_reasons(self, v: Visit, extra: tuple[str, ...]) -> list[str]:
        out = []
        if v.plate is None:
            out.append("no readable plate")
        elif v.plate_confidence < v.rules.confirmation_threshold:
            out.append(f"plate confidence {v.plate_confidence:.2f} below {v.rules.confirmation_threshold:.2f}")
        if v.plate is not None and v.plate_read != v.plate:
            out.append(f"plate corrected from {v.plate_read}")
        if v.rules.require_review:
            out.append("site requires review")
        out.extend(extra)
        return out

    def _raise(self, kind: ViolationKind, started: datetime, as_of: datetime, extra: tuple[str, ...] = ()) -> None:
        v = self._open_visit()
        if any(x.kind == kind for x in v.violations):
            if kind == "idle" and v.idle_fee_from is None:  # a later idle episode bills on the same violation
                self._visit_update(idle_fee_from=started)
                self.note(started, "idle_fee_resumed", "grace over again; fee accrues on the same violation")
            return
        reasons = self._review_reasons(v, extra)
        viol = Violation(
            violation_id=f"{v.visit_id}/{kind}",
            kind=kind,
            started_at=started,
            needs_review=bool(reasons),
            review_reason="; ".join(reasons) or None,
        )
        changes: dict[str, object] = {"violations": (*v.violations, viol)}
        if kind == "idle":
            changes["idle_fee_from"] = started
        self._visit_update(**changes)
        amount, _ = self._amount(viol, max(as_of, started))
        v = self._open_visit()
        self.out.append(
            RaiseViolation(
                violation_id=viol.violation_id,
                visit_id=v.visit_id,
                kind=kind,
                started_at=started,
                amount_so_far=amount,
                currency=v.rules.currency,
                plate=v.plate,
                needs_review=viol.needs_review,
                review_reason=viol.review_reason,
            )
        )
        self.note(started, "violation", kind + (f" (review: {viol.review_reason})" if viol.needs_review else ""))

    def _amount(self, viol: Violation, end: datetime) -> tuple[Decimal, int | None]:
        v = self._open_visit()
        r = v.rules
        if viol.kind == "idle":
            minutes = v.idle_billed_min + (whole_minutes(v.idle_fee_from, end) if v.idle_fee_from else 0)
            return fee_for_minutes(minutes, r.idle_fee_per_min, r.idle_fee_cap), minutes
        if viol.kind == "overstay":
            minutes = whole_minutes(viol.started_at, end)
            return fee_for_minutes(minutes, r.overstay_fee_per_min, r.overstay_fee_cap), minutes
        flat = r.no_charging_fee if viol.kind == "no_charging" else r.return_ban_fee
        return flat.quantize(CENT), None

    def _end_violation(self, kind: ViolationKind, at: datetime, why: str) -> None:
        v = self._open_visit()
        if not any(x.kind == kind and x.ended_at is None for x in v.violations):
            return
        ended = tuple(x.model_copy(update={"ended_at": at}) if x.kind == kind else x for x in v.violations)
        self._visit_update(violations=ended)
        self.note(at, f"{kind}_ended", why)

    # camera side -----------------------------------------------------------------------------

    def on_still_present(self, ev: VehicleStillPresent, t: datetime) -> None:
        v = self.visit
        if v is not None and ev.presence_id in v.presence_ids:
            self._seen(t)
            self.advance(t, t)
            return
        # a heartbeat of a presence whose arrival we never got: the car has been here since `since`
        self._sighting(ev.presence_id, ev.plate, ev.confidence, min(_utc(ev.since), t), t, "heartbeat")

    def _sighting(
        self,
        presence_id: str,
        plate: str | None,
        confidence: float,
        arrived_at: datetime,
        seen_at: datetime,
        source: str,
    ) -> None:
        s = self.state
        v = s.visit
        if presence_id in s.closed_presences or (v is not None and presence_id in v.presence_ids):
            return  # duplicate
        if s.last_departed_at is not None and seen_at < s.last_departed_at:
            return  # older than the last departure: the bay was someone else's then
        if v is not None and arrived_at < v.arrived_at:
            return  # older than the open visit: stale
        read = normalise_plate(plate)
        if v is not None:
            if self._continues(v, read):
                self._visit_update(presence_id=presence_id, presence_ids=(*v.presence_ids, presence_id))
                self.note(seen_at, "presence_resumed", f"new presence {presence_id} after a camera outage: same car")
                self._seen(seen_at)
                self.advance(seen_at, seen_at)
                return
            self._close(min(v.last_seen, arrived_at), "replaced_by_next_arrival", sighting=False)
        if self.state.last_departed_at is not None:
            arrived_at = max(arrived_at, self.state.last_departed_at)
        self._open(presence_id, read, confidence, arrived_at, seen_at, source)

    def _continues(self, v: Visit, read: str | None) -> bool:
        """After a camera outage a restarted worker reports the same car under a new presence id."""
        if not v.outages:
            return False
        if read is not None and v.plate is not None:
            fuzzy = v.rules.fuzzy_distance
            return min(plate_distance(read, v.plate, fuzzy), plate_distance(read, v.plate_read or "", fuzzy)) <= fuzzy
        return v.plugged  # plate unknown on one side: only the cable still in proves it is the same car

    def _seen(self, at: datetime) -> None:
        v = self._open_visit()
        if at > v.last_seen:
            self._visit_update(last_seen=at)
        if v.outage_since is not None and at >= v.outage_since:
            self._visit_update(outage_since=None)
            self.note(at, "seen_after_outage", "car seen again; held timers fire at their own due times")
            self._cancel({"presence_check"})

    def _open(
        self,
        presence_id: str,
        read: str | None,
        confidence: float,
        arrived_at: datetime,
        seen_at: datetime,
        source: str,
    ) -> None:
        ctx, rules = self.ctx, self.ctx.rules
        corrected = correct_plate(read, ctx.known_plates, rules.fuzzy_distance)
        plate = corrected[0] if corrected else read
        white = match_plate(plate, ctx.whitelist, rules.fuzzy_distance, arrived_at)
        black = match_plate(plate, ctx.blacklist, rules.fuzzy_distance, arrived_at)
        visit = Visit(
            visit_id=f"{self.state.bay_id}/{presence_id}",
            bay_id=self.state.bay_id,
            presence_id=presence_id,
            presence_ids=(presence_id,),
            plate=plate,
            plate_read=read,
            plate_confidence=confidence,
            arrived_at=arrived_at,
            last_seen=max(arrived_at, seen_at),
            rules=rules,
            exempt=white is not None,
            exempt_reason=f"whitelist: {white.entry.owner} {white.entry.reason}".strip() if white else None,
            blacklisted=black is not None,
        )
        self._set(visit=visit)
        self.out.append(OpenVisit(visit=visit))
        self.note(arrived_at, "arrived", f"plate {plate or 'unreadable'} ({confidence:.2f}) from {source}")
        if corrected and corrected[1] > 0:
            self.note(arrived_at, "plate_corrected", f"read {read} -> {plate} (distance {corrected[1]})")
        if white:
            self.note(arrived_at, "exempt", f"whitelisted (distance {white.distance}): no warning or penalty")
        if black:
            e = black.entry
            self.out.append(
                RaiseAlert(
                    kind="blacklist",
                    priority=e.priority,
                    bay_id=visit.bay_id,
                    plate=plate,
                    visit_id=visit.visit_id,
                    at=arrived_at,
                    detail=f"matches blacklisted {e.plate} (distance {black.distance}): {e.reason}",
                )
            )
            self.note(arrived_at, "blacklisted", e.reason)
        if not visit.exempt:
            if rules.max_stay_min is not None:
                self._schedule("overstay", arrived_at + timedelta(minutes=rules.max_stay_min))
            self._check_return_ban(arrived_at)
        if source != "departure":
            self._try_link(seen_at)
        if not self._open_visit().plugged:
            self._schedule_no_charging(arrived_at)
        self.advance(seen_at, seen_at)

    def _check_return_ban(self, at: datetime) -> None:
        v = self._open_visit()
        if v.plate is None:
            return
        fuzzy = v.rules.fuzzy_distance
        best: tuple[int, float, str, Overstay] | None = None
        records = {o.visit_id: o for o in (*self.state.recent_overstays, *self.ctx.recent_overstays)}
        for o in records.values():
            if not (o.ended_at <= at < o.until):
                continue
            d = plate_distance(v.plate, o.plate, fuzzy)
            if d <= fuzzy:
                key = (d, -o.ended_at.timestamp(), o.visit_id, o)  # nearest plate, then latest overstay
                if best is None or key[:3] < best[:3]:
                    best = key
        if best is None:
            return
        d, _, _, o = best
        verdict, _, why = self._gate(v.rules, at)
        if verdict != "ok":
            self.note(at, "return_ban_not_enforced", why)
            return
        extra = []
        if d:
            extra.append(f"plate matched the ban at distance {d}")
        if o.needs_review:
            extra.append("the overstay behind the ban awaits review")
        self.out.append(
            RaiseAlert(
                kind="return_ban",
                priority=_PRIORITY["return_ban"],
                bay_id=v.bay_id,
                plate=v.plate,
                visit_id=v.visit_id,
                at=at,
                detail=f"overstayed in visit {o.visit_id}; banned until {_stamp(o.until)}",
            )
        )
        self._raise("return_ban", at, at, tuple(extra))

    def _schedule_no_charging(self, frm: datetime) -> None:
        v = self._open_visit()
        grace = v.rules.parked_without_charging_grace_min
        if v.exempt or grace is None or any(x.kind == "no_charging" for x in v.violations):
            return
        self._schedule("no_charging", frm + timedelta(minutes=grace))

    def on_departed(self, ev: VehicleDeparted, t: datetime) -> None:
        s = self.state
        if ev.presence_id in s.closed_presences:
            return
        last = min(_utc(ev.last_seen), t)
        v = s.visit
        if v is not None:
            if ev.presence_id == v.presence_id:
                self._close(last, "departed", sighting=True)
            return  # a superseded presence, or a car we never saw arrive while another is here
        first = min(_utc(ev.first_seen), last)
        if s.last_departed_at is not None and first < s.last_departed_at:
            return
        # arrival never received (or not yet): rebuild the visit from the departure's own times
        self._open(ev.presence_id, normalise_plate(ev.plate), 0.0, first, first, "departure")
        if self.visit is not None:
            self._close(last, "departed", sighting=True)

    def on_camera_state(self, ev: CameraStateChanged, t: datetime) -> None:
        if ev.camera not in self.state.cameras:
            return
        prev = next((c for c in self.state.camera_status if c.camera == ev.camera), None)
        if prev is not None and (prev.state == ev.state or t < prev.at):
            return  # duplicate or stale
        was_unobserved = self.state.unobserved
        self.advance(t, t)
        others = [c for c in self.state.camera_status if c.camera != ev.camera]
        status = tuple(sorted([*others, CameraStatus(camera=ev.camera, state=ev.state, at=t)], key=lambda c: c.camera))
        self._set(camera_status=status)
        v = self.visit
        if v is None:
            return
        if self.state.unobserved and not was_unobserved:
            self._visit_update(outage_since=v.outage_since or t, outages=(*v.outages, Outage(start=t)))
            self.note(t, "camera_down", f"{ev.camera} {ev.state} {ev.detail}".strip() + "; no departure inferred")
        elif was_unobserved and not self.state.unobserved:
            outs = v.outages
            if outs and outs[-1].end is None:
                outs = (*outs[:-1], outs[-1].model_copy(update={"end": t}))
            self._visit_update(outages=outs)
            self.note(t, "camera_up", ev.camera)
            if v.outage_since is not None:
                self._schedule("presence_check", t + timedelta(minutes=v.rules.camera_recover_min))
        if ev.state == "failed":
            v = self._open_visit()
            self.out.append(
                RaiseAlert(
                    kind="camera_down",
                    priority=_PRIORITY["camera_down"],
                    bay_id=v.bay_id,
                    plate=v.plate,
                    visit_id=v.visit_id,
                    at=t,
                    detail=f"camera {ev.camera} failed during a visit: {ev.detail}".strip(),
                )
            )

    def on_access(self, ev: VehicleArrived, t: datetime) -> None:
        s = self.state
        if ev.presence_id in s.closed_presences:
            return
        self._set(closed_presences=_remember(s.closed_presences, ev.presence_id))
        rules = self.ctx.rules
        plate = normalise_plate(ev.plate)
        fuzzy = rules.fuzzy_distance
        white = match_plate(plate, self.ctx.whitelist, fuzzy, t)
        black = match_plate(plate, self.ctx.blacklist, fuzzy, t)
        bans = [] if plate is None else [o for o in self.ctx.recent_overstays if o.ended_at <= t < o.until]
        ban = min(
            (o for o in bans if plate_distance(plate or "", o.plate, fuzzy) <= fuzzy),
            key=lambda o: (plate_distance(plate or "", o.plate, fuzzy), -o.ended_at.timestamp(), o.visit_id),
            default=None,
        )
        base = {"bay_id": s.bay_id, "plate": plate, "at": t}
        if black is not None:  # at a gate the blacklist wins over a whitelist: it is the security list
            self.out.append(
                RaiseAlert(kind="blacklist", priority=black.entry.priority, detail=black.entry.reason, **base)
            )
            accepted, reason = False, f"blacklisted: {black.entry.reason}"
        elif white is not None:
            accepted, reason = True, "whitelisted"
        elif ban is not None:
            detail = f"return ban after overstay {ban.visit_id} until {_stamp(ban.until)}"
            self.out.append(RaiseAlert(kind="return_ban", priority=_PRIORITY["return_ban"], detail=detail, **base))
            accepted, reason = False, detail
        else:
            # An access point admits permit holders only: anyone else, or an unreadable plate, is refused.
            accepted, reason = False, "plate unreadable" if plate is None else "not on the whitelist"
        self.out.append(AccessDecision(presence_id=ev.presence_id, accepted=accepted, reason=reason, **base))

    # closing ---------------------------------------------------------------------------------

    def _close(self, end: datetime, reason: str, sighting: bool) -> None:
        v = self._open_visit()
        end = max(end, v.arrived_at)
        if sighting:
            self._seen(end)
        self.advance(end, end)
        if self.visit is None:
            return  # a presence check fired inside advance() and closed it already
        self._end_idle(end, "visit ended")
        v = self._open_visit()
        if v.plugged:
            self.note(end, "left_plugged", "charger still reports the cable in; penalties end at departure")
        self.note(end, "departed", reason)
        self._cancel()
        v = self._open_visit()
        ended = []
        for viol in v.violations:
            stop = viol.ended_at or end
            amount, minutes = self._amount(viol, stop)
            voided = viol.kind != "return_ban" and viol.started_at >= end
            ended.append(viol.model_copy(update={"ended_at": stop}))
            self.out.append(
                FinalisePenalty(
                    violation_id=viol.violation_id,
                    visit_id=v.visit_id,
                    kind=viol.kind,
                    started_at=viol.started_at,
                    ended_at=stop,
                    minutes=minutes,
                    amount=Decimal("0.00") if voided else amount,
                    currency=v.rules.currency,
                    plate=v.plate,
                    needs_review=viol.needs_review,
                    review_reason=viol.review_reason,
                    voided=voided,
                )
            )
        final = v.model_copy(update={"departed_at": end, "close_reason": reason, "violations": tuple(ended)})
        self.out.append(CloseVisit(visit=final))
        bans = tuple(o for o in self.state.recent_overstays if o.until > end)
        over = next((x for x in ended if x.kind == "overstay" and x.started_at < end), None)
        if over is not None and v.plate is not None and v.rules.return_ban_hours > 0:
            until = end + timedelta(hours=v.rules.return_ban_hours)
            rec = Overstay(
                plate=v.plate,
                visit_id=v.visit_id,
                bay_id=v.bay_id,
                ended_at=end,
                until=until,
                needs_review=over.needs_review,
            )
            bans = (*bans, rec)
        closed = self.state.closed_presences
        for p in v.presence_ids:
            closed = _remember(closed, p)
        last = self.state.last_departed_at
        self._set(
            visit=None,
            recent_overstays=bans,
            closed_presences=closed,
            last_departed_at=end if last is None else max(last, end),
        )

    # charger side ----------------------------------------------------------------------------

    def on_tx(
        self,
        ev: TransactionStarted | TransactionUpdated | ChargingSuspended | ChargingIdle | TransactionEnded,
        t: datetime,
    ) -> None:
        s = self.state
        key = f"{ev.charge_point_id}/{ev.transaction_id}"
        tx = s.tx
        mine = tx is not None and tx.key == key
        if not mine and not s.owns_evse(ev.charge_point_id, ev.evse_id, ev.connector_id):
            return
        if key in s.closed_txs:
            return
        if not mine and tx is not None and t < tx.started_at:
            return  # older than the transaction the outlet has now: never let it supersede a newer one
        if isinstance(ev, TransactionStarted):
            if tx is not None and mine:
                if t < tx.started_at:  # the start came after a later event: keep its own, earlier time
                    self._set(tx=tx.model_copy(update={"started_at": t}))
                return
            self._new_tx(ev.charge_point_id, ev.transaction_id, t)
            return
        if tx is None or not mine:
            if isinstance(ev, TransactionEnded):
                self._set(closed_txs=_remember(s.closed_txs, key))  # never seen running: nothing to undo
                return
            self._new_tx(ev.charge_point_id, ev.transaction_id, t)  # we missed its start
        elif t < tx.last_at and not isinstance(ev, TransactionEnded):
            return  # stale: never rewrite newer charger state
        tx = self.state.tx
        assert tx is not None
        if isinstance(ev, TransactionEnded):
            t = max(t, tx.started_at)
        self.advance(t, t)
        if isinstance(ev, TransactionUpdated):
            if ev.charging_state == "Charging":
                self._tx_charging(t)
        elif isinstance(ev, ChargingIdle):
            self._tx_idle(t, ev.reason or "idle")
        elif isinstance(ev, ChargingSuspended):
            self._tx_suspended(t, ev.reason or "suspended")
        else:
            self._tx_ended(t, ev.reason)
        tx = self.state.tx
        if tx is not None and tx.key == key and t > tx.last_at:
            self._set(tx=tx.model_copy(update={"last_at": t}))
        self.advance(t, t)

    def _new_tx(self, cp: str, tx_id: str, t: datetime) -> None:
        self.advance(t, t)
        if self.state.tx is not None:
            self._tx_unplug(t, "superseded by a new transaction on the same outlet", keep=False, no_charging=False)
        self._set(tx=ChargerTx(charge_point_id=cp, transaction_id=tx_id, started_at=t, last_at=t))
        self._try_link(t)

    def _try_link(self, at: datetime) -> None:
        v, tx, s = self.visit, self.state.tx, self.state
        if v is None or tx is None or v.plugged:
            return
        if tx.visit_id is not None or tx.ended_at is not None or not tx.plugged:
            return  # belongs to an earlier car, or no longer a live session
        if s.last_departed_at is not None and tx.started_at < s.last_departed_at:
            return  # began while the previous car was still here
        self._set(tx=tx.model_copy(update={"visit_id": v.visit_id}))
        ref = TxRef(charge_point_id=tx.charge_point_id, transaction_id=tx.transaction_id)
        self._visit_update(tx=ref, plugged=True, charging=tx.charging, plugged_at=tx.started_at, unplugged_at=None)
        self.out.append(
            LinkTransaction(
                visit_id=v.visit_id, charge_point_id=tx.charge_point_id, transaction_id=tx.transaction_id, at=at
            )
        )
        self.note(at, "linked", f"transaction {tx.key} started {_stamp(tx.started_at)}")
        self._cancel({"no_charging"})
        self._end_violation("no_charging", at, "charging session started")
        if tx.idle_since is not None:
            self._visit_idle(tx.idle_since, "charger was already idle")

    def _tx_charging(self, t: datetime) -> None:
        tx = self.state.tx
        assert tx is not None
        if tx.charging or tx.ended_at is not None or not tx.plugged:
            return
        self._set(tx=tx.model_copy(update={"charging": True, "suspended": False, "idle_since": None}))
        if self._linked() is not None:
            self._end_idle(t, "charging resumed")
            self._visit_update(charging=True)
            self.note(t, "charging")

    def _tx_idle(self, t: datetime, reason: str) -> None:
        if reason == "Idle":  # 2.0.1: no EV connected while the transaction stays open
            self._tx_unplug(t, "charger reports no EV connected", keep=True)
            return
        tx = self.state.tx
        assert tx is not None
        if tx.idle_since is not None or not tx.plugged:
            return
        self._set(tx=tx.model_copy(update={"charging": False, "suspended": False, "idle_since": t}))
        if self._linked() is not None:
            self._visit_idle(t, reason)

    def _visit_idle(self, at: datetime, reason: str) -> None:
        v = self._open_visit()
        if v.idle_since is not None:
            return
        self._visit_update(idle_since=at, charging=False, charging_complete_at=v.charging_complete_at or at)
        self.note(at, "idle", reason)
        if v.exempt:
            return
        r = v.rules
        due = at + timedelta(minutes=r.idle_grace_min)
        self._schedule("idle", due)
        starts = r.schedule.next_start(due)
        if r.warn_before_idle and v.warned_idle_since != at and starts is not None and starts > self.t:
            self._visit_update(warned_idle_since=at)
            self.out.append(
                SendWarning(
                    visit_id=v.visit_id,
                    fee_starts_at=starts,
                    fee_per_min=r.idle_fee_per_min,
                    fee_cap=r.idle_fee_cap,
                    currency=r.currency,
                    plate=v.plate,
                    tx=v.tx,
                )
            )
            self.note(at, "warning", f"idle fee {r.idle_fee_per_min} {r.currency}/min from {_stamp(starts)}")

    def _end_idle(self, at: datetime, why: str) -> None:
        v = self.visit
        if v is None or v.idle_since is None:
            return
        billed = v.idle_billed_min + (whole_minutes(v.idle_fee_from, at) if v.idle_fee_from else 0)
        self._visit_update(idle_since=None, idle_fee_from=None, idle_billed_min=billed)
        self._cancel({"idle"})
        self.note(at, "idle_end", f"{why}; {billed} idle min billed so far")

    def _tx_suspended(self, t: datetime, reason: str) -> None:
        tx = self.state.tx
        assert tx is not None
        if not tx.charging:
            return
        self._set(tx=tx.model_copy(update={"charging": False, "suspended": True}))
        if self._linked() is not None:
            self._visit_update(charging=False)
            self.note(t, "suspended", f"{reason}: paused by the station, not the car; no idle fee")

    def _tx_ended(self, t: datetime, reason: str) -> None:
        tx = self.state.tx
        assert tx is not None
        if tx.ended_at is not None:
            return
        self._set(tx=tx.model_copy(update={"ended_at": t}))
        if self._linked() is not None:
            self.note(t, "transaction_ended", reason)
        if reason in _UNPLUG_END_REASONS:
            self._tx_unplug(t, f"transaction ended: {reason}", keep=False)
        elif tx.idle_since is None:
            self._tx_idle(t, "transaction ended, cable still in")

    def _tx_unplug(self, t: datetime, why: str, keep: bool, no_charging: bool = True) -> None:
        tx = self.state.tx
        assert tx is not None
        if tx.plugged:
            linked = self._linked()
            self._set(tx=tx.model_copy(update={"plugged": False, "charging": False, "idle_since": None}))
            if linked is not None and linked.plugged:
                self._end_idle(t, "unplugged")
                self._visit_update(plugged=False, charging=False, unplugged_at=t)
                self.note(t, "unplugged", why)
                if no_charging:  # still in the bay with no session: parked-without-charging rules apply
                    self._schedule_no_charging(t)
                v = self._open_visit()
                if v.outage_since is not None and not self.state.unobserved:
                    # the cable was the only proof of presence since the outage: look for the car again
                    self._schedule("presence_check", t + timedelta(minutes=v.rules.camera_recover_min))
        if not keep:
            self._set(tx=None, closed_txs=_remember(self.state.closed_txs, tx.key))

    def on_available(self, ev: ConnectorAvailable, t: datetime) -> None:
        s = self.state
        if not s.owns_evse(ev.charge_point_id, ev.evse_id, ev.connector_id) or s.tx is None:
            return
        if t < s.tx.started_at:
            return  # describes the outlet before this transaction
        self.advance(t, t)
        self._tx_unplug(t, "connector available", keep=False)
        self.advance(t, t)
