"""Visits from camera sightings: arrival, presence, departure, return ban, parking without charging,
    closing a visit."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from enforcement.decide.model import (
    _PRIORITY,
    CloseVisit,
    FinalisePenalty,
    OpenVisit,
    Overstay,
    RaiseAlert,
    Visit,
    _remember,
    _stamp,
    _utc,
)
from enforcement.lists import correct_plate, match_plate, normalise_plate, plate_distance
from models.events import VehicleDeparted, VehicleStillPresent


class VisitRules:
    """Visits from camera sightings: arrival, presence, departure, return ban, parking without charging,
    closing a visit."""

    # Attributes and helpers of _Run (enforcement.decide.run) are used through self.
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
