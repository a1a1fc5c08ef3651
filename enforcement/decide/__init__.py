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

The package: `model.py` (state, inputs, actions), `run.py` (timers, violations, amounts), and one
module per rule family: `visits.py`, `outages.py`, `access.py`, `charging.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from enforcement.decide.model import (  # noqa: F401 - the public types, imported from here
    _PRIORITY,
    AccessDecision,
    Action,
    AlertKind,
    AppendTimeline,
    BayEvent,
    BayState,
    CameraStatus,
    CancelTimer,
    ChargerTx,
    CloseVisit,
    DecideContext,
    Decision,
    FinalisePenalty,
    LinkTransaction,
    OpenVisit,
    Outage,
    Overstay,
    RaiseAlert,
    RaiseViolation,
    ScheduleTimer,
    SendWarning,
    TimelineEntry,
    Timer,
    TimerDue,
    TimerKind,
    TxRef,
    Violation,
    ViolationKind,
    Visit,
)
from enforcement.decide.run import _Run
from enforcement.lists import normalise_plate
from models.events import PlateRead, VehicleArrived, VehicleDeparted, VehicleStillPresent

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


