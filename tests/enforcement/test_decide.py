"""decide(): one table row per rule and per event ordering, driven by a fake clock, plus properties.

A row is a list of steps (events, scheduler ticks, context changes) and the expected *summary* of
the actions they produce: visits opened/closed, links, warnings, violations, penalties, alerts and
access decisions. Timeline entries and timers are checked where a row names them. Every step also
round-trips the state through JSON, as a service restart would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from enforcement.decide import (
    AccessDecision,
    AppendTimeline,
    BayState,
    CancelTimer,
    CloseVisit,
    DecideContext,
    Decision,
    FinalisePenalty,
    LinkTransaction,
    OpenVisit,
    Overstay,
    RaiseAlert,
    RaiseViolation,
    ScheduleTimer,
    SendWarning,
    TimerDue,
    decide,
    unknown_bay_alert,
)
from enforcement.lists import BlacklistEntry, WhitelistEntry
from enforcement.rules import Rules, Schedule
from models.events import (
    CameraStateChanged,
    ChargingIdle,
    ChargingSuspended,
    ConnectorAvailable,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
    VehicleArrived,
    VehicleDeparted,
    VehicleStillPresent,
)

DAY0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
CP = "CP-1"
BAY = BayState(bay_id="B1", charge_point_id=CP, evse_id=1, connector_id=1, cameras=("cam1",))
GATE = BayState(bay_id="GATE", kind="access", cameras=("gate",))
RULES = Rules(
    max_stay_min=120,
    overstay_fee_per_min=Decimal("0.25"),
    overstay_fee_cap=Decimal("30.00"),
    idle_grace_min=15,
    idle_fee_per_min=Decimal("0.50"),
    idle_fee_cap=Decimal("20.00"),
    parked_without_charging_grace_min=10,
    no_charging_fee=Decimal("10.00"),
    return_ban_fee=Decimal("25.00"),
    confirmation_threshold=0.8,
    fuzzy_distance=1,
    camera_recover_min=3,
)


def at(hhmm: str, day: int = 0) -> datetime:
    parts = [int(x) for x in hhmm.split(":")]
    h, m, s = ([*parts, 0])[:3]
    return DAY0 + timedelta(days=day, hours=h, minutes=m, seconds=s)


def hm(value: datetime) -> str:
    day = (value.date() - DAY0.date()).days
    return value.strftime("%H:%M") + (f"+{day}d" if day else "")


# --- event builders ----------------------------------------------------------------------------


def arrive(t: str, p: str = "p1", plate: str | None = "AB123", conf: float = 0.95, bay: str = "B1", day: int = 0):
    return VehicleArrived(at=at(t, day), presence_id=p, camera="cam1", bay_id=bay, plate=plate, confidence=conf)


def seen(t: str, p: str = "p1", since: str | None = None, plate: str | None = "AB123", day: int = 0):
    return VehicleStillPresent(
        at=at(t, day),
        presence_id=p,
        camera="cam1",
        bay_id="B1",
        plate=plate,
        confidence=0.95,
        since=at(since or t, day),
    )


def depart(
    t: str, p: str = "p1", last: str | None = None, first: str = "09:00", plate="AB123", day: int = 0, bay: str = "B1"
):
    return VehicleDeparted(
        at=at(t, day),
        presence_id=p,
        camera="cam1",
        bay_id=bay,
        plate=plate,
        first_seen=at(first, day),
        last_seen=at(last or t, day),
    )


def start(t: str, tx: str = "t1", evse: int | None = 1, conn: int | None = 1, day: int = 0):
    return TransactionStarted(at=at(t, day), charge_point_id=CP, transaction_id=tx, evse_id=evse, connector_id=conn)


def charging(t: str, tx: str = "t1", day: int = 0):
    return TransactionUpdated(
        at=at(t, day), charge_point_id=CP, transaction_id=tx, evse_id=1, connector_id=1, charging_state="Charging"
    )


def idle(t: str, tx: str = "t1", reason: str = "SuspendedEV", day: int = 0):
    return ChargingIdle(at=at(t, day), charge_point_id=CP, transaction_id=tx, evse_id=1, connector_id=1, reason=reason)


def suspended(t: str, tx: str = "t1"):
    return ChargingSuspended(
        at=at(t), charge_point_id=CP, transaction_id=tx, evse_id=1, connector_id=1, reason="SuspendedEVSE"
    )


def ended(t: str, tx: str = "t1", reason: str = "Local", day: int = 0):
    return TransactionEnded(at=at(t, day), charge_point_id=CP, transaction_id=tx, connector_id=1, reason=reason)


def available(t: str, day: int = 0):
    return ConnectorAvailable(at=at(t, day), charge_point_id=CP, connector_id=1)


def cam(t: str, state: str, camera: str = "cam1"):
    return CameraStateChanged(at=at(t), camera=camera, state=state)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Tick:
    """The scheduler runs at `t` and delivers every timer due by then (late ones included)."""

    t: str
    day: int = 0


@dataclass(frozen=True)
class Ctx:
    """The service's context changes (lists, occupancy, rules) from this step on."""

    changes: dict[str, Any]


@dataclass(frozen=True)
class Clock:
    """Feed `event` while the service clock reads `t` (to test clamping of future stamps)."""

    t: str
    event: Any


# --- the runner --------------------------------------------------------------------------------


@dataclass
class Outcome:
    state: BayState
    actions: list[Any] = field(default_factory=list)
    decisions: list[tuple[BayState, Any, datetime, DecideContext, Decision]] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def timeline(self) -> list[str]:
        return [a.entry.what for a in self.of(AppendTimeline)]


def play(
    steps: list[Any],
    ctx: DecideContext | None = None,
    state: BayState = BAY,
    scheduler: bool = True,
    restart: bool = True,
) -> Outcome:
    """Feed steps in order. `scheduler`: an on-time scheduler delivers due timers before each event."""
    ctx = ctx or DecideContext(rules=RULES)
    out = Outcome(state=state)
    clock = at("00:00")

    def feed(event: Any, now: datetime) -> None:
        before = out.state
        d = decide(before, event, now, ctx)
        out.decisions.append((before, event, now, ctx, d))
        out.actions.extend(d.actions)
        out.state = BayState.model_validate_json(d.new_state.model_dump_json()) if restart else d.new_state

    def deliver(until: datetime) -> None:
        while True:
            pending = sorted((tm for tm in out.state.timers if tm.due_at <= until and not tm.held), key=_order)
            if not pending:
                return
            tm = pending[0]
            feed(
                TimerDue(timer_id=tm.timer_id, kind=tm.kind, visit_id=tm.visit_id, due_at=tm.due_at),
                max(clock, tm.due_at),
            )
            if any(x.timer_id == tm.timer_id and not x.held for x in out.state.timers):
                raise AssertionError(f"timer {tm.timer_id} still pending after it was delivered")

    for step in steps:
        if isinstance(step, Ctx):
            ctx = ctx.model_copy(update=step.changes)
            continue
        if isinstance(step, Tick):
            clock = max(clock, at(step.t, step.day))
            deliver(clock)
            continue
        event, now = (step.event, at(step.t)) if isinstance(step, Clock) else (step, None)
        if scheduler:
            deliver(event.at)
        clock = max(clock, now or event.at)
        feed(event, clock)
    return out


def _order(tm):
    return (tm.due_at, tm.timer_id)


def summary(actions: list[Any]) -> list[str]:
    out = []
    for a in actions:
        review = " review" if getattr(a, "needs_review", False) else ""
        if isinstance(a, OpenVisit):
            out.append(f"open {a.visit.plate or '-'}")
        elif isinstance(a, CloseVisit):
            out.append(f"close {hm(a.visit.departed_at)} {a.visit.close_reason}")
        elif isinstance(a, LinkTransaction):
            out.append(f"link {a.transaction_id}")
        elif isinstance(a, SendWarning):
            out.append(f"warn {hm(a.fee_starts_at)}")
        elif isinstance(a, RaiseViolation):
            out.append(f"violation {a.kind} {hm(a.started_at)} {a.amount_so_far}{review}")
        elif isinstance(a, FinalisePenalty):
            out.append(f"final {a.kind} {a.amount}{review}" + (" void" if a.voided else ""))
        elif isinstance(a, RaiseAlert):
            out.append(f"alert {a.kind} {a.priority}")
        elif isinstance(a, AccessDecision):
            out.append(f"access {'ok' if a.accepted else 'refused'}: {a.reason}")
    return out


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[Any]
    expect: list[str]
    rules: dict[str, Any] = field(default_factory=dict)
    ctx: dict[str, Any] = field(default_factory=dict)
    scheduler: bool = True
    notes: tuple[str, ...] = ()  # timeline entries that must appear
    state: BayState = BAY
    now_sensitive: bool = False  # outcome depends on when timers are delivered (occupancy, voiding)

    def context(self) -> DecideContext:
        return DecideContext(rules=RULES.model_copy(update=self.rules), **self.ctx)


OPEN, LINK = "open AB123", "link t1"
NO_NC = {"parked_without_charging_grace_min": None}  # isolate a row from the no-charging rule
OFFICE = Schedule(days=("mon", "tue", "wed", "thu", "fri"), start=at("08:00").time(), end=at("18:00").time())

CASES = [
    # --- the normal charge / idle / leave cycle
    Case(
        "charge, complete, idle fee after grace, leave",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), depart("10:40")],
        [OPEN, LINK, "warn 10:15", "violation idle 10:15 0.00", "final idle 12.50", "close 10:40 departed"],
        notes=("linked", "idle", "warning", "idle_end", "departed"),
    ),
    Case(
        "idle fee is capped, overstay accrues beside it",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), depart("12:00")],
        [
            OPEN,
            LINK,
            "warn 10:15",
            "violation idle 10:15 0.00",
            "violation overstay 11:00 0.00",
            "final idle 20.00",
            "final overstay 15.00",
            "close 12:00 departed",
        ],
    ),
    Case(
        "overstay fee is capped",
        [arrive("09:00"), depart("14:00")],
        [OPEN, "violation overstay 11:00 0.00", "final overstay 30.00", "close 14:00 departed"],
        rules=NO_NC,
    ),
    Case(
        "no warning when warn_before_idle is off",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), depart("10:20")],
        [OPEN, LINK, "violation idle 10:15 0.00", "final idle 2.50", "close 10:20 departed"],
        rules={"warn_before_idle": False},
    ),
    Case(
        "charging resumes inside the grace: idle timer cancelled, no fee",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), charging("10:10"), depart("10:40")],
        [OPEN, LINK, "warn 10:15", "close 10:40 departed"],
        notes=("idle_end", "charging"),
    ),
    Case(
        "idle episodes add up on one violation",
        [
            arrive("09:00"),
            start("09:02"),
            charging("09:03"),
            idle("10:00"),
            charging("10:25"),
            idle("10:40"),
            depart("11:05"),
        ],
        [
            OPEN,
            LINK,
            "warn 10:15",
            "violation idle 10:15 0.00",
            "warn 10:55",
            "final idle 10.00",
            "close 11:05 departed",
        ],
        rules={"max_stay_min": None},
        notes=("idle_fee_resumed",),
    ),
    Case(
        "station-side suspension (SuspendedEVSE) never starts idle time",
        [arrive("09:00"), start("09:02"), charging("09:03"), suspended("10:00"), depart("10:50")],
        [OPEN, LINK, "close 10:50 departed"],
        notes=("suspended",),
    ),
    Case(
        "transaction ended with the cable in: idle from the end",
        [arrive("09:00"), start("09:02"), charging("09:03"), ended("10:00"), depart("10:45")],
        [OPEN, LINK, "warn 10:15", "violation idle 10:15 0.00", "final idle 15.00", "close 10:45 departed"],
        notes=("transaction_ended",),
    ),
    Case(
        "EVDisconnected end is an unplug: no idle, no-charging grace restarts",
        [arrive("09:00"), start("09:02"), charging("09:03"), ended("10:00", reason="EVDisconnected"), depart("10:05")],
        [OPEN, LINK, "close 10:05 departed"],
        notes=("unplugged",),
    ),
    Case(
        "2.0.1 ChargingIdle(Idle) means no EV connected: unplug, then parked without charging",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00", reason="Idle"), depart("10:20")],
        [OPEN, LINK, "violation no_charging 10:10 10.00", "final no_charging 10.00", "close 10:20 departed"],
    ),
    Case(
        "unplugged but staying: parked-without-charging after the grace",
        [arrive("09:00"), start("09:01"), charging("09:02"), ended("09:30"), available("09:35"), depart("10:00")],
        [
            OPEN,
            LINK,
            "warn 09:45",
            "violation no_charging 09:45 10.00",
            "final no_charging 10.00",
            "close 10:00 departed",
        ],
    ),
    # --- arrival / transaction orderings
    Case(
        "car seen before the transaction starts",
        [arrive("09:00"), start("09:05"), depart("09:30")],
        [OPEN, LINK, "close 09:30 departed"],
        notes=("linked",),
    ),
    Case(
        "transaction started before the plate is read: linked on arrival",
        [start("09:00"), charging("09:01"), arrive("09:02"), depart("09:30")],
        [OPEN, LINK, "close 09:30 departed"],
    ),
    Case(
        "charger already idle when the plate is read: fee counts from the charger's idle time",
        [start("09:00"), charging("09:00:30"), idle("09:01"), arrive("09:02"), depart("09:30")],
        [OPEN, LINK, "warn 09:16", "violation idle 09:16 0.00", "final idle 7.00", "close 09:30 departed"],
    ),
    Case(
        "a transaction of the previous car is never linked to the next one",
        [
            arrive("09:00"),
            start("09:01"),
            depart("09:30"),
            arrive("09:40", p="p2", plate="CD456"),
            depart("10:00", p="p2"),
        ],
        [OPEN, LINK, "close 09:30 departed", "open CD456", "close 10:00 departed"],
        rules=NO_NC,
        notes=("left_plugged",),
    ),
    Case(
        "a transaction that already ended is not linked to a car arriving later",
        [
            arrive("09:00"),
            depart("09:30"),
            start("09:40"),
            ended("09:45"),
            arrive("09:50", p="p2", plate="CD456"),
            depart("09:55", p="p2"),
        ],
        [OPEN, "close 09:30 departed", "open CD456", "close 09:55 departed"],
        rules=NO_NC,
    ),
    Case(
        "next car charges on a fresh transaction after the connector freed",
        [
            arrive("09:00"),
            start("09:01"),
            ended("09:20", reason="EVDisconnected"),
            available("09:21"),
            depart("09:25"),
            arrive("09:40", p="p2", plate="CD456"),
            start("09:42", tx="t2"),
            depart("10:00", p="p2"),
        ],
        [OPEN, LINK, "close 09:25 departed", "open CD456", "link t2", "close 10:00 departed"],
    ),
    Case(
        "transaction first seen through an update (missed start) is still linked",
        [arrive("09:00"), charging("09:05", tx="t9"), depart("09:30")],
        [OPEN, "link t9", "close 09:30 departed"],
    ),
    Case(
        "a late start of an older transaction never supersedes the current one",
        [arrive("09:00"), start("09:05", tx="t2"), Clock("09:06", start("08:30", tx="t1")), depart("09:30")],
        [OPEN, "link t2", "close 09:30 departed"],
    ),
    Case(
        "a late TransactionStarted after its update changes nothing",
        [arrive("09:00"), charging("09:05"), Clock("09:06", start("09:04")), depart("09:30")],
        [OPEN, LINK, "close 09:30 departed"],
    ),
    Case(
        "the car leaves with the cable still plugged: finalised at departure time",
        [arrive("09:00"), start("09:01"), charging("09:02"), idle("10:00"), depart("10:31", last="10:30")],
        [OPEN, LINK, "warn 10:15", "violation idle 10:15 0.00", "final idle 7.50", "close 10:30 departed"],
        notes=("left_plugged",),
    ),
    Case(
        "two consecutive cars: the new arrival closes the old visit at its last sighting",
        [
            arrive("09:00"),
            seen("09:05"),
            arrive("09:30", p="p2", plate="CD456"),
            depart("09:31", p="p1"),
            depart("09:50", p="p2"),
        ],
        ["open AB123", "close 09:05 replaced_by_next_arrival", "open CD456", "close 09:50 departed"],
        rules=NO_NC,
    ),
    Case(
        "a charger event for another outlet is ignored",
        [arrive("09:00"), start("09:01", evse=2, conn=2), depart("09:30")],
        [OPEN, "close 09:30 departed"],
        rules=NO_NC,
    ),
    Case(
        "an OCPP 1.6 event names only the connector and still matches",
        [arrive("09:00"), start("09:01", evse=None, conn=1), depart("09:30")],
        [OPEN, LINK, "close 09:30 departed"],
    ),
    Case(
        "a stale charger event (older than the last applied) is ignored",
        [
            arrive("09:00"),
            start("09:01"),
            charging("09:02"),
            idle("10:00"),
            Clock("10:01", charging("09:50")),
            depart("10:30"),
        ],
        [OPEN, LINK, "warn 10:15", "violation idle 10:15 0.00", "final idle 7.50", "close 10:30 departed"],
    ),
    # --- camera-side orderings
    Case(
        "plate never readable: tracked, every penalty needs review",
        [arrive("09:00", plate=None, conf=0.3), depart("09:20")],
        [
            "open -",
            "violation no_charging 09:10 10.00 review",
            "final no_charging 10.00 review",
            "close 09:20 departed",
        ],
    ),
    Case(
        "duplicated arrival and departure: no second visit",
        [arrive("09:00"), arrive("09:00"), depart("09:05"), depart("09:05")],
        [OPEN, "close 09:05 departed"],
    ),
    Case(
        "departure delivered before its arrival: visit rebuilt, late arrival ignored",
        [depart("09:30", first="09:00"), arrive("09:00")],
        [OPEN, "violation no_charging 09:10 10.00 review", "final no_charging 10.00 review", "close 09:30 departed"],
        notes=("arrived",),
    ),
    Case(
        "an arrival older than the last departure is stale",
        [arrive("09:00"), depart("09:30"), Clock("09:40", arrive("09:10", p="p0", plate="ZZ999"))],
        [OPEN, "close 09:30 departed"],
        rules=NO_NC,
    ),
    Case(
        "heartbeat of a presence we never saw arrive opens the visit at its start",
        [seen("09:30", since="09:00"), depart("09:40")],
        [OPEN, "violation no_charging 09:10 10.00", "final no_charging 10.00", "close 09:40 departed"],
    ),
    Case(
        "heartbeats alone never close a visit; silence is not departure",
        [arrive("09:00"), seen("09:05"), Tick("10:59")],
        [OPEN],
        rules=NO_NC,
    ),
    Case(
        "an event stamped in the future is applied at now",
        [Clock("09:00", arrive("09:05")), depart("09:30")],
        [OPEN, "close 09:30 departed"],
        rules=NO_NC,
    ),
    Case(
        "a misread one edit from a known plate is corrected and reviewed",
        [arrive("09:00", plate="AB1284"), depart("09:20")],
        [
            "open AB1234",
            "violation no_charging 09:10 10.00 review",
            "final no_charging 10.00 review",
            "close 09:20 departed",
        ],
        ctx={"known_plates": ("AB1234", "XY9")},
        notes=("plate_corrected",),
    ),
    Case(
        "a misread equally near two known plates is left alone",
        [arrive("09:00", plate="AB1284"), depart("09:05")],
        ["open AB1284", "close 09:05 departed"],
        ctx={"known_plates": ("AB1234", "AB1294")},
    ),
    # --- camera outages
    Case(
        "camera fails and restarts: same plate continues the visit, held timer fires at its true time",
        [
            arrive("09:00"),
            cam("10:00", "failed"),
            Tick("11:00"),
            cam("11:30", "running"),
            arrive("11:32", p="p2"),
            depart("12:00", p="p2"),
        ],
        [
            OPEN,
            "alert camera_down 4",
            "violation overstay 11:00 8.00 review",
            "final overstay 15.00 review",
            "close 12:00 departed",
        ],
        rules=NO_NC,
        notes=("camera_down", "overstay_held", "camera_up", "presence_resumed", "seen_after_outage"),
    ),
    Case(
        "camera outage and the car is not seen again: closed at its last sighting, no penalty",
        [
            arrive("09:00"),
            seen("09:55"),
            cam("10:00", "reconnecting"),
            Tick("11:00"),
            cam("11:30", "running"),
            Tick("11:40"),
        ],
        [OPEN, "close 09:55 not_seen_after_camera_outage"],
        rules=NO_NC,
    ),
    Case(
        "camera outage while the car is plugged in: the cable proves presence",
        [
            arrive("09:00"),
            start("09:01"),
            cam("09:30", "failed"),
            Tick("11:00"),
            cam("11:10", "running"),
            Tick("11:13"),
            arrive("11:12", p="p2", plate=None),
            depart("11:20", p="p2"),
        ],
        [
            OPEN,
            LINK,
            "alert camera_down 4",
            "violation overstay 11:00 0.00",
            "final overstay 5.00",
            "close 11:20 departed",
        ],
    ),
    Case(
        "plugged through an outage, unplugged and never seen again: closed at the unplug",
        [
            arrive("09:00"),
            start("09:01"),
            cam("09:30", "failed"),
            cam("09:40", "running"),
            ended("10:00", reason="EVDisconnected"),
            Tick("10:30"),
        ],
        [OPEN, LINK, "alert camera_down 4", "close 10:00 not_seen_after_camera_outage"],
    ),
    Case(
        "a transaction end stamped before its start is applied at the start",
        [arrive("09:00"), charging("09:05"), Clock("09:06", ended("09:00")), depart("09:40")],
        [OPEN, LINK, "warn 09:20", "violation idle 09:20 0.00", "final idle 10.00", "close 09:40 departed"],
    ),
    Case(
        "camera failure with no visit raises nothing",
        [cam("09:00", "failed"), cam("09:10", "running"), arrive("09:20"), depart("09:25")],
        [OPEN, "close 09:25 departed"],
    ),
    Case(
        "a different plate after an outage is a different car",
        [arrive("09:00"), cam("09:10", "stopped"), cam("09:20", "running"), arrive("09:21", p="p2", plate="CD456")],
        [OPEN, "close 09:00 replaced_by_next_arrival", "open CD456"],
        rules=NO_NC,
    ),
    # --- lists
    Case(
        "whitelisted: no warning and no penalty, ever",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), depart("13:00")],
        [OPEN, LINK, "close 13:00 departed"],
        ctx={"whitelist": (WhitelistEntry(plate="AB123", owner="fleet"),)},
        notes=("exempt",),
    ),
    Case(
        "whitelisted within the fuzzy distance",
        [arrive("09:00", plate="AB128"), depart("12:00")],
        ["open AB128", "close 12:00 departed"],
        ctx={"whitelist": (WhitelistEntry(plate="AB123"),)},
    ),
    Case(
        "an expired whitelist entry exempts nothing",
        [arrive("09:00"), depart("09:20")],
        [OPEN, "violation no_charging 09:10 10.00", "final no_charging 10.00", "close 09:20 departed"],
        ctx={"whitelist": (WhitelistEntry(plate="AB123", valid_until=at("00:00")),)},
    ),
    Case(
        "a not-yet-valid whitelist entry exempts nothing",
        [arrive("09:00"), depart("09:20")],
        [OPEN, "violation no_charging 09:10 10.00", "final no_charging 10.00", "close 09:20 departed"],
        ctx={"whitelist": (WhitelistEntry(plate="AB123", valid_from=at("12:00")),)},
    ),
    Case(
        "blacklisted: alert at arrival even without charging",
        [arrive("09:00"), depart("09:05")],
        [OPEN, "alert blacklist 8", "close 09:05 departed"],
        ctx={"blacklist": (BlacklistEntry(plate="AB123", reason="stolen", priority=8),)},
        notes=("blacklisted",),
    ),
    Case(
        "blacklisted and charging normally: still alerted",
        [arrive("09:00"), start("09:01"), depart("09:30")],
        [OPEN, "alert blacklist 8", LINK, "close 09:30 departed"],
        ctx={"blacklist": (BlacklistEntry(plate="AB123", reason="unpaid", priority=8),)},
    ),
    # --- gating
    Case(
        "outside active hours no violation starts; it starts at the next window",
        [arrive("17:00"), Tick("19:00"), Tick("08:00", day=1), depart("09:00", first="17:00", day=1)],
        [OPEN, "violation overstay 08:00+1d 0.00", "final overstay 15.00", "close 09:00+1d departed"],
        rules={**NO_NC, "schedule": OFFICE},
        notes=("overstay_deferred",),
    ),
    Case(
        "an idle warning names the fee start inside the schedule",
        [arrive("17:00"), start("17:01"), idle("17:50"), depart("17:59")],
        [OPEN, LINK, "warn 08:00+1d", "close 17:59 departed"],
        rules={"schedule": OFFICE},
    ),
    Case(
        "a schedule with no days never starts a violation",
        [arrive("09:00"), depart("12:00")],
        [OPEN, "close 12:00 departed"],
        rules={**NO_NC, "schedule": Schedule(days=())},
        notes=("overstay_not_enforced",),
    ),
    Case(
        "below the occupancy threshold no violation starts",
        [arrive("09:00"), depart("11:20")],
        [OPEN, "close 11:20 departed"],
        rules={**NO_NC, "min_occupancy_pct": 80},
        ctx={"occupancy_pct": 50},
        notes=("overstay_deferred",),
        now_sensitive=True,
    ),
    Case(
        "unknown occupancy counts as too low",
        [arrive("09:00"), depart("11:20")],
        [OPEN, "close 11:20 departed"],
        rules={**NO_NC, "min_occupancy_pct": 80},
        now_sensitive=True,
    ),
    Case(
        "occupancy rises: the deferred violation starts at the re-check",
        [arrive("09:00"), Tick("11:00"), Ctx({"occupancy_pct": 90}), Tick("11:05"), depart("11:20")],
        [OPEN, "violation overstay 11:05 0.00", "final overstay 3.75", "close 11:20 departed"],
        rules={**NO_NC, "min_occupancy_pct": 80},
        ctx={"occupancy_pct": 50},
        now_sensitive=True,
    ),
    Case(
        "above the occupancy threshold violations start on time",
        [arrive("09:00"), depart("11:20")],
        [OPEN, "violation overstay 11:00 0.00", "final overstay 5.00", "close 11:20 departed"],
        rules={**NO_NC, "min_occupancy_pct": 80},
        ctx={"occupancy_pct": 90},
    ),
    # --- review
    Case(
        "a read below the confirmation threshold needs review",
        [arrive("09:00", conf=0.5), depart("09:20")],
        [OPEN, "violation no_charging 09:10 10.00 review", "final no_charging 10.00 review", "close 09:20 departed"],
    ),
    Case(
        "a site that requires review reviews everything",
        [arrive("09:00"), depart("09:20")],
        [OPEN, "violation no_charging 09:10 10.00 review", "final no_charging 10.00 review", "close 09:20 departed"],
        rules={"require_review": True},
    ),
    # --- return ban
    Case(
        "return ban: the same plate back within the ban is a violation",
        [arrive("09:00"), depart("11:30"), arrive("15:00", p="p2"), depart("15:10", p="p2", first="15:00")],
        [
            OPEN,
            "violation overstay 11:00 0.00",
            "final overstay 7.50",
            "close 11:30 departed",
            OPEN,
            "alert return_ban 6",
            "violation return_ban 15:00 25.00",
            "final return_ban 25.00",
            "close 15:10 departed",
        ],
        rules={**NO_NC, "return_ban_hours": 24},
    ),
    Case(
        "return ban expired",
        [arrive("09:00"), depart("11:30"), arrive("15:00", p="p2"), depart("15:10", p="p2", first="15:00")],
        [
            OPEN,
            "violation overstay 11:00 0.00",
            "final overstay 7.50",
            "close 11:30 departed",
            OPEN,
            "close 15:10 departed",
        ],
        rules={**NO_NC, "return_ban_hours": 2},
    ),
    Case(
        "return ban from an overstay in another bay (site-wide list)",
        [arrive("09:00"), depart("09:10")],
        [
            OPEN,
            "alert return_ban 6",
            "violation return_ban 09:00 25.00",
            "final return_ban 25.00",
            "close 09:10 departed",
        ],
        rules=NO_NC,
        ctx={
            "recent_overstays": (
                Overstay(plate="AB123", visit_id="B7/x", bay_id="B7", ended_at=at("08:00"), until=at("20:00")),
            )
        },
    ),
    Case(
        "a whitelisted plate is never banned",
        [arrive("09:00"), depart("09:10")],
        [OPEN, "close 09:10 departed"],
        rules=NO_NC,
        ctx={
            "recent_overstays": (
                Overstay(plate="AB123", visit_id="B7/x", bay_id="B7", ended_at=at("08:00"), until=at("20:00")),
            ),
            "whitelist": (WhitelistEntry(plate="AB123"),),
        },
    ),
    Case(
        "a return ban outside active hours is only noted",
        [arrive("07:00"), depart("07:10", first="07:00")],
        [OPEN, "close 07:10 departed"],
        rules={**NO_NC, "schedule": OFFICE},
        ctx={
            "recent_overstays": (
                Overstay(plate="AB123", visit_id="B7/x", bay_id="B7", ended_at=at("06:00"), until=at("20:00")),
            )
        },
        notes=("return_ban_not_enforced",),
    ),
    # --- no charging
    Case(
        "parked without charging past the grace",
        [arrive("09:00"), depart("09:30")],
        [OPEN, "violation no_charging 09:10 10.00", "final no_charging 10.00", "close 09:30 departed"],
    ),
    Case(
        "a transaction inside the grace cancels the no-charging timer",
        [arrive("09:00"), start("09:05"), depart("09:30")],
        [OPEN, LINK, "close 09:30 departed"],
    ),
    # --- timers and restarts
    Case(
        "a timer delivered late starts the violation at its true due time",
        [arrive("09:00"), Tick("12:00"), depart("12:30")],
        [OPEN, "violation overstay 11:00 15.00", "final overstay 22.50", "close 12:30 departed"],
        rules=NO_NC,
        scheduler=False,
    ),
    Case(
        "timers never delivered: the departure catches up",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), depart("10:40")],
        [OPEN, LINK, "warn 10:15", "violation idle 10:15 12.50", "final idle 12.50", "close 10:40 departed"],
        scheduler=False,
    ),
    Case(
        "timers never delivered: a charger event fires the idle timer before applying itself",
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), charging("10:25"), depart("10:40")],
        [OPEN, LINK, "warn 10:15", "violation idle 10:15 5.00", "final idle 5.00", "close 10:40 departed"],
        scheduler=False,
    ),
    Case(
        "a departure reported after a timer fired voids that violation",
        [arrive("09:00"), Tick("09:10"), depart("09:10:30", last="09:09:30")],
        [OPEN, "violation no_charging 09:10 10.00", "final no_charging 0.00 void", "close 09:09 departed"],
        now_sensitive=True,
    ),
    Case(
        "rules changing mid-visit do not apply retroactively",
        [
            arrive("09:00"),
            start("09:02"),
            Ctx({"rules": RULES.model_copy(update={"idle_fee_per_min": Decimal("5")})}),
            charging("09:03"),
            idle("10:00"),
            depart("10:40"),
        ],
        [OPEN, LINK, "warn 10:15", "violation idle 10:15 0.00", "final idle 12.50", "close 10:40 departed"],
    ),
    Case(
        "camera event for a bay this state is not: nothing",
        [arrive("09:00", bay="B9"), depart("09:30", bay="B9")],
        [],
    ),
]

ACCESS_CASES = [
    ("a plate not on the whitelist is refused", {}, "AB123", ["access refused: not on the whitelist"]),
    ("an unreadable plate is refused", {}, None, ["access refused: plate unreadable"]),
    (
        "a blacklisted plate is refused with an alert (even if also whitelisted)",
        {
            "blacklist": (BlacklistEntry(plate="AB123", reason="stolen", priority=9),),
            "whitelist": (WhitelistEntry(plate="AB123"),),
        },
        "AB123",
        ["alert blacklist 9", "access refused: blacklisted: stolen"],
    ),
    (
        "a whitelisted plate is admitted",
        {"whitelist": (WhitelistEntry(plate="AB123"),)},
        "AB123",
        ["access ok: whitelisted"],
    ),
    (
        "a plate under a return ban is refused",
        {
            "recent_overstays": (
                Overstay(plate="AB123", visit_id="B1/p0", bay_id="B1", ended_at=at("08:00"), until=at("20:00")),
            )
        },
        "AB124",
        ["alert return_ban 6", "access refused: return ban after overstay B1/p0 until 2026-11-02T20:00:00Z"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide_table(case: Case):
    out = play(case.steps, case.context(), state=case.state, scheduler=case.scheduler)
    assert summary(out.actions) == case.expect
    missing = [n for n in case.notes if n not in out.timeline]
    assert not missing, f"timeline lacks {missing}: {out.timeline}"


@pytest.mark.parametrize("name, ctx, plate, expect", ACCESS_CASES, ids=[c[0] for c in ACCESS_CASES])
def test_access_point(name, ctx, plate, expect):
    out = play(
        [arrive("09:00", plate=plate, bay="GATE"), arrive("09:00", plate=plate, bay="GATE")],
        DecideContext(rules=RULES, **ctx),
        state=GATE,
    )
    assert summary(out.actions) == expect  # the duplicate arrival decides nothing twice
    assert out.state.visit is None


# --- properties over the whole table -----------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_event_twice_yields_nothing_new(case: Case):
    out = play(case.steps, case.context(), state=case.state, scheduler=case.scheduler)
    for _, event, now, ctx, d in out.decisions:
        again = decide(d.new_state, event, now, ctx)
        assert again.actions == (), f"{type(event).__name__} replayed produced {summary(list(again.actions))}"
        assert again.new_state == d.new_state


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_restart_changes_nothing_and_penalties_do_not_depend_on_the_scheduler(case: Case):
    with_restart = play(case.steps, case.context(), state=case.state, scheduler=case.scheduler)
    without = play(case.steps, case.context(), state=case.state, scheduler=case.scheduler, restart=False)
    assert with_restart.actions == without.actions
    if case.now_sensitive:
        return
    on_time = play(case.steps, case.context(), state=case.state, scheduler=True)
    never = play(case.steps, case.context(), state=case.state, scheduler=False)

    def finals(o: Outcome) -> list[tuple]:
        return sorted(
            (f.violation_id, f.started_at, f.ended_at, f.amount, f.needs_review)
            for f in o.of(FinalisePenalty)
            if not f.voided
        )

    assert finals(on_time) == finals(never)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_violation_is_finalised_once_within_caps(case: Case):
    out = play(case.steps, case.context(), state=case.state, scheduler=case.scheduler)
    raised = [v.violation_id for v in out.of(RaiseViolation)]
    final = [f.violation_id for f in out.of(FinalisePenalty)]
    assert len(raised) == len(set(raised)) and len(final) == len(set(final))
    closed = {c.visit.visit_id for c in out.of(CloseVisit)}
    assert {r for r in raised if r.rsplit("/", 1)[0] in closed} == set(final)
    for f in out.of(FinalisePenalty):
        cap = {"idle": RULES.idle_fee_cap, "overstay": RULES.overstay_fee_cap}.get(f.kind)
        assert f.amount >= 0 and (cap is None or f.amount <= cap)
        assert f.ended_at >= f.started_at or f.voided


# --- specific behaviour ------------------------------------------------------------------------


def test_timer_ids_are_stable_and_rescheduling_is_idempotent():
    a = play([arrive("09:00")], DecideContext(rules=RULES))
    b = play([arrive("09:00")], DecideContext(rules=RULES))
    ids = [s.timer_id for s in a.of(ScheduleTimer)]
    assert ids == [s.timer_id for s in b.of(ScheduleTimer)]
    assert ids == ["B1/p1/overstay/2026-11-02T11:00:00Z", "B1/p1/no_charging/2026-11-02T09:10:00Z"]
    assert len(a.state.timers) == 2


def test_timer_fed_early_or_twice_or_after_cancel_does_nothing():
    out = play([arrive("09:00"), start("09:05")], DecideContext(rules=RULES))
    cancelled = out.of(CancelTimer)[0]
    assert cancelled.timer_id.startswith("B1/p1/no_charging/")
    over = next(t for t in out.state.timers if t.kind == "overstay")
    due = TimerDue(timer_id=over.timer_id, kind=over.kind, visit_id=over.visit_id, due_at=over.due_at)
    early = decide(out.state, due, at("10:59"), DecideContext(rules=RULES))
    assert early.actions == () and early.new_state == out.state
    gone = TimerDue(timer_id=cancelled.timer_id, kind="no_charging", visit_id="B1/p1", due_at=at("09:10"))
    assert decide(out.state, gone, at("09:10"), DecideContext(rules=RULES)).actions == ()
    fired = decide(out.state, due, at("11:00"), DecideContext(rules=RULES))
    assert [a.kind for a in fired.actions if isinstance(a, RaiseViolation)] == ["overstay"]
    assert decide(fired.new_state, due, at("11:01"), DecideContext(rules=RULES)).actions == ()


def test_idle_end_cancels_the_idle_timer_at_once():
    out = play([arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00")], DecideContext(rules=RULES))
    (idle_timer,) = [t for t in out.state.timers if t.kind == "idle"]
    d = decide(out.state, charging("10:10"), at("10:10"), DecideContext(rules=RULES))
    assert [a.timer_id for a in d.actions if isinstance(a, CancelTimer)] == [idle_timer.timer_id]
    assert all(t.kind != "idle" for t in d.new_state.timers)
    assert d.new_state.visit is not None and d.new_state.visit.idle_since is None and d.new_state.visit.charging


def test_future_stamp_is_clamped_to_now():
    out = play([Clock("09:00", arrive("09:05"))], DecideContext(rules=RULES))
    assert out.state.visit is not None and out.state.visit.arrived_at == at("09:00")
    assert {t.due_at for t in out.state.timers} == {at("09:10"), at("11:00")}


def test_review_reasons_are_explained():
    out = play(
        [arrive("09:00", plate="AB1284", conf=0.5), depart("09:20")],
        DecideContext(rules=RULES, known_plates=("AB1234",)),
    )
    (v,) = out.of(RaiseViolation)
    assert v.needs_review and v.plate == "AB1234"
    assert v.review_reason == "plate confidence 0.50 below 0.80; plate corrected from AB1284"
    out = play(
        [arrive("09:00", plate=None), depart("09:20")],
        DecideContext(rules=RULES.model_copy(update={"require_review": True})),
    )
    assert out.of(RaiseViolation)[0].review_reason == "no readable plate; site requires review"


def test_close_visit_carries_the_final_snapshot():
    out = play(
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), depart("10:40")], DecideContext(rules=RULES)
    )
    (close,) = out.of(CloseVisit)
    v = close.visit
    assert v.departed_at == at("10:40") and v.close_reason == "departed"
    assert v.tx is not None and v.tx.transaction_id == "t1" and v.plugged
    assert v.charging_complete_at == at("10:00") and v.idle_since is None and v.idle_billed_min == 25
    assert [x.ended_at for x in v.violations] == [at("10:40")]
    assert v.rules == RULES
    assert [e.what for e in v.timeline][:2] == ["arrived", "linked"]
    assert out.state.visit is None and out.state.last_departed_at == at("10:40")
    assert out.state.timers == ()  # every timer of the visit was fired or cancelled


def test_return_ban_is_recorded_on_the_bay_state():
    rules = RULES.model_copy(update={"return_ban_hours": 24, "parked_without_charging_grace_min": None})
    out = play([arrive("09:00"), depart("11:30")], DecideContext(rules=rules))
    (ban,) = out.state.recent_overstays
    assert (ban.plate, ban.ended_at, ban.until) == ("AB123", at("11:30"), at("11:30", day=1))


def test_unknown_bay_alert():
    alert = unknown_bay_alert(arrive("09:00", bay="B9", plate="ab 123"))
    assert (alert.kind, alert.bay_id, alert.plate) == ("unknown_bay", "B9", "AB123")


def test_decision_round_trips_json():
    out = play(
        [arrive("09:00"), start("09:02"), charging("09:03"), idle("10:00"), depart("10:40")], DecideContext(rules=RULES)
    )
    for *_, d in out.decisions:
        assert Decision.model_validate_json(d.model_dump_json()) == d


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="aware"):
        decide(BAY, arrive("09:00"), datetime(2026, 11, 2, 9), DecideContext())


# --- random orderings --------------------------------------------------------------------------


def _pool(rnd: random.Random) -> list[Any]:
    """A messy morning in one bay: two cars, two transactions, a camera outage, in some order."""
    base = [
        arrive("09:00"),
        seen("09:30"),
        start("09:02"),
        charging("09:03"),
        idle("10:00"),
        charging("10:20"),
        idle("10:40"),
        ended("11:00"),
        available("11:05"),
        depart("11:30", last="11:29"),
        cam("10:30", "failed"),
        cam("10:45", "running"),
        arrive("12:00", p="p2", plate="CD456", conf=0.6),
        start("12:03", tx="t2"),
        ended("12:30", tx="t2", reason="EVDisconnected"),
        depart("14:30", p="p2", first="12:00"),
    ]
    picked = [e for e in base if rnd.random() < 0.85]
    # mostly in order, with some neighbours swapped and some duplicated
    for i in range(len(picked) - 1):
        if rnd.random() < 0.2:
            picked[i], picked[i + 1] = picked[i + 1], picked[i]
    for _ in range(rnd.randint(0, 3)):
        picked.insert(rnd.randrange(len(picked) + 1), rnd.choice(picked))
    return picked


def test_property_random_orderings_keep_the_invariants():
    rules = RULES.model_copy(update={"return_ban_hours": 3})
    for seed in range(60):
        rnd = random.Random(seed)
        steps = _pool(rnd)
        ctx = DecideContext(rules=rules, known_plates=("CD456",), occupancy_pct=rnd.choice([None, 95.0]))
        out = play([*steps, Tick("23:00")], ctx, scheduler=rnd.random() < 0.5)
        raised = [v.violation_id for v in out.of(RaiseViolation)]
        final = [f.violation_id for f in out.of(FinalisePenalty)]
        assert len(raised) == len(set(raised)), seed
        assert len(final) == len(set(final)) and set(final) <= set(raised), seed
        opened = [o.visit.visit_id for o in out.of(OpenVisit)]
        closed = [c.visit.visit_id for c in out.of(CloseVisit)]
        assert len(opened) == len(set(opened)) and set(closed) <= set(opened), seed
        for f in out.of(FinalisePenalty):
            assert f.amount <= {"idle": Decimal("20.00"), "overstay": Decimal("30.00")}.get(f.kind, Decimal("25.00"))
        for _, event, now, c, d in out.decisions:
            again = decide(d.new_state, event, now, c)
            assert again.actions == () and again.new_state == d.new_state, (seed, event)
