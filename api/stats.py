"""Bay occupancy and idle time per local day, from visit rows. Pure: no database, no clock reads.

Definitions (what the charts and `GET /api/v1/stats/bays` show):

* occupied: from a visit's arrival to its departure; a visit still open counts until `now`. Visits of
  one bay that overlap (a late departure report) are merged, so a minute is never counted twice.
* idle: inside a visit, after its charging session stopped delivering energy and until charging
  resumes or the car leaves. It starts at the timeline's `idle` entry (charging complete, or the
  transaction ended with the cable still in) or at `unplugged` after a session (the car stays parked
  in a charging bay), and ends at `charging`, `linked` (a new session) or `departed`. That is the time
  a bay is blocked for other drivers, which is wider than the billed idle fee (no grace, no schedule).
* days are local calendar days in the site's time zone, so a visit across midnight is split between
  the two days and a DST day has 23 or 25 hours. Today's span ends at `now`: percentages of today
  are of the elapsed part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

Interval = tuple[datetime, datetime]


def as_utc(value: datetime | str) -> datetime:
    """A timeline `at` (ISO text in stored JSON) or a datetime, as aware UTC; naive means UTC."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@dataclass(frozen=True)
class VisitSpan:
    """The part of a visit row the statistics need."""

    bay_id: str
    arrived_at: datetime
    departed_at: datetime | None
    timeline: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_row(cls, row: Any) -> VisitSpan:
        """From a `VisitRow` (its `data` JSON holds the whole Visit snapshot, timeline included)."""
        data = row.data or {}
        return cls(bay_id=row.bay_id, arrived_at=as_utc(row.arrived_at),
                   departed_at=as_utc(row.departed_at) if row.departed_at else None,
                   timeline=tuple(data.get("timeline") or ()))

    def occupied(self, now: datetime) -> Interval | None:
        """Arrival to departure (or now); None for a visit that has not begun by `now` or ends before it starts."""
        end = self.departed_at or now
        return (self.arrived_at, end) if end > self.arrived_at else None


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Union of intervals, sorted; touching ones join."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlap_s(intervals: Sequence[Interval], start: datetime, end: datetime) -> float:
    """Seconds of (merged) `intervals` inside [start, end)."""
    total = 0.0
    for a, b in intervals:
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


def idle_intervals(visit: VisitSpan, now: datetime) -> list[Interval]:
    """Idle periods of one visit from its timeline (see the module text), clipped to the visit."""
    occupied = visit.occupied(now)
    if occupied is None:
        return []
    found: list[Interval] = []
    start: datetime | None = None
    had_session = False

    def close(at: datetime) -> None:
        nonlocal start
        if start is not None:
            found.append((start, at))
            start = None

    # Append order, not time order: the core notes an idle start found on linking (at the charger's
    # earlier idle time) right after `linked`, and that must open a period, not be closed by it.
    for entry in visit.timeline:
        what, at = entry.get("what"), as_utc(entry["at"])
        if what == "linked":
            had_session = True
            close(at)
        elif what == "idle":
            had_session = True
            start = at if start is None else start
        elif what == "charging":
            had_session = True
            close(at)
        elif what == "unplugged":
            if had_session and start is None:
                start = at
        elif what == "departed":
            close(at)
    close(occupied[1])
    lo, hi = occupied
    return merge((max(a, lo), min(b, hi)) for a, b in found)


def day_bounds(day: date, tz: tzinfo) -> Interval:
    """Local midnight to the next local midnight, in UTC (23 or 25 hours on DST days)."""
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def local_days(now: datetime, tz: tzinfo, days: int) -> list[date]:
    """The last `days` local dates, oldest first, today included."""
    today = now.astimezone(tz).date()
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


@dataclass(frozen=True)
class BayDay:
    bay_id: str
    day: date
    span_min: float  # minutes of the day considered: all of it, or up to now for today
    occupied_min: float
    idle_min: float
    visits: int  # visits overlapping the day

    @property
    def occupancy_pct(self) -> float:
        return 100.0 * self.occupied_min / self.span_min if self.span_min > 0 else 0.0

    @property
    def idle_pct(self) -> float:
        return 100.0 * self.idle_min / self.span_min if self.span_min > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"bay_id": self.bay_id, "date": self.day.isoformat(), "span_min": round(self.span_min, 1),
                "occupied_min": round(self.occupied_min, 1), "idle_min": round(self.idle_min, 1),
                "occupancy_pct": round(self.occupancy_pct, 1), "idle_pct": round(self.idle_pct, 1),
                "visits": self.visits}


def bay_days(visits: Iterable[VisitSpan], *, now: datetime, tz: tzinfo, days: int,
             bays: Iterable[str] = ()) -> dict[str, list[BayDay]]:
    """Per bay (sorted by id; `bays` adds bays without visits), one `BayDay` per local day, oldest first."""
    now = as_utc(now)
    occupied: dict[str, list[Interval]] = {b: [] for b in bays}
    idle: dict[str, list[Interval]] = {b: [] for b in occupied}
    for v in visits:
        span = v.occupied(now)
        occupied.setdefault(v.bay_id, [])
        idle.setdefault(v.bay_id, [])
        if span is None:
            continue
        occupied[v.bay_id].append(span)
        idle[v.bay_id].extend(idle_intervals(v, now))
    out: dict[str, list[BayDay]] = {}
    calendar = [(d, *day_bounds(d, tz)) for d in local_days(now, tz, days)]
    for bay in sorted(occupied):
        spans = occupied[bay]
        occ, idl = merge(spans), merge(idle[bay])
        rows = []
        for d, start, end in calendar:
            end = min(end, now)
            rows.append(BayDay(
                bay_id=bay, day=d, span_min=max(0.0, (end - start).total_seconds() / 60),
                occupied_min=overlap_s(occ, start, end) / 60, idle_min=overlap_s(idl, start, end) / 60,
                visits=sum(1 for a, b in spans if a < end and b > start)))
        out[bay] = rows
    return out
