"""One decide() call: a mutable scratchpad over the bay state, with the timers and violations every
rule family uses; the families themselves are mixins (visits, outages, access, charging)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import cast

from enforcement.decide.access import AccessRules
from enforcement.decide.charging import ChargingRules
from enforcement.decide.model import (
    Action,
    AppendTimeline,
    BayEvent,
    BayState,
    CancelTimer,
    DecideContext,
    RaiseViolation,
    ScheduleTimer,
    TimelineEntry,
    Timer,
    TimerDue,
    TimerKind,
    Violation,
    ViolationKind,
    Visit,
    _stamp,
    _timer_order,
    _utc,
)
from enforcement.decide.outages import OutageRules
from enforcement.decide.visits import VisitRules
from enforcement.rules import CENT, Rules, fee_for_minutes, whole_minutes
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


class _Run(VisitRules, OutageRules, AccessRules, ChargingRules):
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

