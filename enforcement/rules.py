"""Enforcement rules: one strict, frozen pydantic tree per site, per-bay overrides, and the money math.

Pure: no clock, no I/O. Money is `Decimal` throughout; an amount is rounded to cents once
(ROUND_HALF_UP) and the cap is applied after rounding, so a cap always holds exactly.
Only whole elapsed minutes are billed (59 s over the limit is free): the fair reading of "per minute".

A visit snapshots the `Rules` in force when it starts (`Visit.rules`), so a rule change never
applies retroactively to a car already in the bay.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.settings import DEFAULT_CONFIRMATION_THRESHOLD

CENT = Decimal("0.01")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Money = Annotated[Decimal, Field(ge=0, le=Decimal("100000"), max_digits=12, decimal_places=2)]
Rate = Annotated[Decimal, Field(ge=0, le=Decimal("1000"), max_digits=12, decimal_places=4)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Schedule(_Strict):
    """When new violations may start: a daily local-time window on some days, in one IANA zone."""

    days: tuple[Weekday, ...] = Field(WEEKDAYS, description="Days on which the window starts.")
    start: dt.time = Field(dt.time(0, 0), description="Local start of the daily window.")
    end: dt.time = Field(
        dt.time(0, 0),
        description="Local end (exclusive). Equal to start: all day. Earlier than start: the window runs past "
        "midnight and belongs to the day it starts on (22:00-06:00 on 'fri' covers Friday night).",
    )
    timezone: str = Field("UTC", description="IANA time zone of start/end, e.g. Europe/Berlin.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @field_validator("days")
    @classmethod
    def _unique_days(cls, v: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
        return tuple(d for d in WEEKDAYS if d in v)  # canonical order so equal schedules compare equal

    @field_validator("start", "end")
    @classmethod
    def _naive_time(cls, v: dt.time) -> dt.time:
        if v.tzinfo is not None:
            raise ValueError("give a local wall-clock time without offset; the zone is `timezone`")
        return v

    def _runs_on(self, day: dt.date) -> bool:
        return WEEKDAYS[day.weekday()] in self.days

    def is_active(self, at: dt.datetime) -> bool:
        """True when `at` (aware) lies inside a window."""
        local = at.astimezone(ZoneInfo(self.timezone))
        t, today = local.time().replace(tzinfo=None), local.date()
        if self.start == self.end:
            return self._runs_on(today)
        if self.start < self.end:
            return self._runs_on(today) and self.start <= t < self.end
        yesterday = today - dt.timedelta(days=1)
        return (self._runs_on(today) and t >= self.start) or (self._runs_on(yesterday) and t < self.end)

    def next_start(self, at: dt.datetime) -> dt.datetime | None:
        """The earliest instant >= `at` inside a window (UTC), or None when no day is enabled."""
        if self.is_active(at):
            return at
        zone = ZoneInfo(self.timezone)
        local_day = at.astimezone(zone).date()
        for offset in range(9):
            day = local_day + dt.timedelta(days=offset)
            if not self._runs_on(day):
                continue
            candidate = dt.datetime.combine(day, self.start, tzinfo=zone).astimezone(dt.UTC)
            if candidate > at and self.is_active(candidate):  # is_active guards a start inside a DST gap
                return candidate
        return None


class Rules(_Strict):
    """Penalty rules of a site; a bay may override any field (`resolve_rules`)."""

    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code of every amount.")
    max_stay_min: int | None = Field(
        240, ge=1, le=7 * 24 * 60, description="Longest stay before an overstay starts; None: no limit."
    )
    overstay_fee_per_min: Rate = Field(Decimal("0"), description="Overstay fee per whole minute past the limit.")
    overstay_fee_cap: Money | None = Field(None, description="Most an overstay can cost; None: uncapped.")
    idle_grace_min: int = Field(
        15, ge=0, le=24 * 60, description="Minutes after charging completes (EV side) before the idle fee starts."
    )
    idle_fee_per_min: Rate = Field(Decimal("0.50"), description="Idle fee per whole minute after the grace.")
    idle_fee_cap: Money | None = Field(Decimal("30.00"), description="Most the idle fee of one visit can reach.")
    warn_before_idle: bool = Field(True, description="Send a warning when the idle grace starts.")
    parked_without_charging_grace_min: int | None = Field(
        10, ge=0, le=24 * 60, description="Minutes an EV bay may be occupied with no transaction; None: allowed."
    )
    no_charging_fee: Money = Field(Decimal("0"), description="Flat fee of a parked-without-charging violation.")
    schedule: Schedule = Field(Schedule(), description="Outside it no new violation starts.")
    min_occupancy_pct: float | None = Field(
        None, ge=0, le=100, description="Start violations only while the site is at least this % occupied."
    )
    occupancy_recheck_min: int = Field(
        5, ge=1, le=24 * 60, description="When occupancy is too low, look again after this many minutes."
    )
    return_ban_hours: float = Field(
        0, ge=0, le=24 * 30, description="After an overstay, arriving again within this many hours is a violation."
    )
    return_ban_fee: Money = Field(Decimal("0"), description="Flat fee of a return-ban violation.")
    # The plate reader's confidence is a calibrated probability that the whole plate is right
    # (anpr/weights/calibration.json); 0.99 is where its cross-fitted auto-accept precision reached
    # 0.98-1.0 on the validation splits. Lower it only with figures from your own cameras.
    confirmation_threshold: float = Field(
        DEFAULT_CONFIRMATION_THRESHOLD, ge=0, le=1,
        description="Plate confidence below this makes a penalty need operator review.",
    )
    require_review: bool = Field(False, description="Every penalty of this site needs operator review.")
    fuzzy_distance: int = Field(1, ge=0, le=3, description="Max edit distance for list and plate matching.")
    camera_recover_min: int = Field(
        3,
        ge=1,
        le=24 * 60,
        description="After a camera outage, a car not seen again within this many minutes is taken as gone "
        "since its last sighting.",
    )


def resolve_rules(site: Rules, bay_override: dict[str, Any] | None) -> Rules:
    """Site rules with one bay's overrides applied and validated; `schedule` may be overridden in part."""
    if not bay_override:
        return site
    data = site.model_dump()
    for key, value in bay_override.items():
        if key == "schedule" and isinstance(value, dict):
            data["schedule"] = {**data["schedule"], **value}
        else:
            data[key] = value
    return Rules.model_validate(data)


# --- money -------------------------------------------------------------------------------------


def whole_minutes(start: dt.datetime, end: dt.datetime) -> int:
    """Whole minutes from start to end; 0 when end is not after start."""
    seconds = (end - start).total_seconds()
    return int(seconds // 60) if seconds > 0 else 0


def fee_for_minutes(minutes: int, per_min: Decimal, cap: Decimal | None) -> Decimal:
    """minutes x rate, rounded to cents, never above the cap."""
    amount = (per_min * max(minutes, 0)).quantize(CENT, rounding=ROUND_HALF_UP)
    if cap is not None:
        amount = min(amount, cap.quantize(CENT, rounding=ROUND_HALF_UP))
    return amount


def idle_fee(idle_start: dt.datetime, end: dt.datetime, rules: Rules) -> Decimal:
    """Idle fee of one idle period: from idle_start + grace until end (unplug or departure), capped."""
    fee_from = idle_start + dt.timedelta(minutes=rules.idle_grace_min)
    return fee_for_minutes(whole_minutes(fee_from, end), rules.idle_fee_per_min, rules.idle_fee_cap)


def overstay_minutes(arrived_at: dt.datetime, end: dt.datetime, rules: Rules) -> int:
    """Whole minutes past max_stay_min; 0 without a limit."""
    if rules.max_stay_min is None:
        return 0
    return whole_minutes(arrived_at + dt.timedelta(minutes=rules.max_stay_min), end)


def overstay_fee(arrived_at: dt.datetime, end: dt.datetime, rules: Rules) -> Decimal:
    """Overstay fee for a stay from arrived_at to end, capped."""
    return fee_for_minutes(overstay_minutes(arrived_at, end, rules), rules.overstay_fee_per_min, rules.overstay_fee_cap)
