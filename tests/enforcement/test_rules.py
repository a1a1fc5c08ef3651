"""Rules: validation, per-bay overrides, the active schedule and the money math."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from enforcement.rules import (
    Rules,
    Schedule,
    fee_for_minutes,
    idle_fee,
    overstay_fee,
    overstay_minutes,
    resolve_rules,
    whole_minutes,
)

MON = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday


def at(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return MON.replace(hour=hh, minute=mm, second=ss) + timedelta(days=day)


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_stay_min", 0),
        ("idle_grace_min", -1),
        ("idle_fee_per_min", Decimal("-0.01")),
        ("idle_fee_cap", Decimal("1.001")),  # money has cents, no finer
        ("currency", "euro"),
        ("min_occupancy_pct", 101),
        ("confirmation_threshold", 1.5),
        ("fuzzy_distance", 4),
        ("return_ban_hours", -1),
        ("surprise", 1),  # extra=forbid
    ],
)
def test_rules_refuse_out_of_bounds(field, value):
    with pytest.raises(ValidationError):
        Rules(**{field: value})


def test_rules_are_frozen_and_described():
    r = Rules()
    with pytest.raises(ValidationError):
        r.max_stay_min = 5  # type: ignore[misc]
    assert all(f.description for f in Rules.model_fields.values())


def test_rules_round_trip_json():
    r = Rules(idle_fee_per_min=Decimal("0.125"), schedule=Schedule(days=("fri", "mon"), timezone="Europe/Berlin"))
    assert Rules.model_validate_json(r.model_dump_json()) == r
    assert r.schedule.days == ("mon", "fri")  # canonical order


def test_schedule_refuses_unknown_zone():
    with pytest.raises(ValidationError, match="unknown IANA"):
        Schedule(timezone="Mars/Olympus")


def test_resolve_rules_applies_bay_override_and_keeps_site():
    site = Rules(max_stay_min=240, schedule=Schedule(start=time(8), end=time(18), timezone="Europe/Berlin"))
    bay = resolve_rules(site, {"max_stay_min": 60, "schedule": {"end": "20:00"}})
    assert bay.max_stay_min == 60
    assert bay.schedule == Schedule(start=time(8), end=time(20), timezone="Europe/Berlin")  # partial schedule merge
    assert site.max_stay_min == 240 and site.schedule.end == time(18)
    assert resolve_rules(site, None) is site
    assert resolve_rules(site, {}) is site


def test_resolve_rules_validates_override():
    with pytest.raises(ValidationError):
        resolve_rules(Rules(), {"max_stay": 60})  # typo: extra key refused
    with pytest.raises(ValidationError):
        resolve_rules(Rules(), {"idle_grace_min": -5})


@pytest.mark.parametrize(
    "sched, when, active",
    [
        (Schedule(), at(0, 3), True),  # default: always
        (Schedule(start=time(8), end=time(18)), at(0, 8), True),  # start inclusive
        (Schedule(start=time(8), end=time(18)), at(0, 18), False),  # end exclusive
        (Schedule(days=("mon", "tue", "wed", "thu", "fri"), start=time(8), end=time(18)), at(5, 10), False),  # Sat
        (Schedule(days=("mon",), start=time(22), end=time(6)), at(1, 3), True),  # Monday night runs into Tuesday
        (Schedule(days=("mon",), start=time(22), end=time(6)), at(0, 3), False),  # Sunday night is not Monday's
        (Schedule(start=time(8), end=time(0)), at(0, 23, 59), True),  # end 00:00 = until midnight
        (Schedule(start=time(8), end=time(18), timezone="Europe/Berlin"), at(0, 7, 30), True),  # 08:30 in Berlin
        (Schedule(start=time(8), end=time(18), timezone="Europe/Berlin"), at(0, 17, 30), False),  # 18:30 Berlin
        (Schedule(days=()), at(0, 12), False),
    ],
)
def test_schedule_is_active(sched, when, active):
    assert sched.is_active(when) is active


def test_schedule_next_start():
    office = Schedule(days=("mon", "tue", "wed", "thu", "fri"), start=time(8), end=time(18))
    assert office.next_start(at(0, 10)) == at(0, 10)  # already active
    assert office.next_start(at(0, 19)) == at(1, 8)  # tomorrow morning
    assert office.next_start(at(4, 19)) == at(7, 8)  # Friday evening -> Monday
    assert Schedule(days=()).next_start(at(0, 10)) is None
    berlin = Schedule(start=time(8), end=time(18), timezone="Europe/Berlin")
    assert berlin.next_start(at(0, 17, 30)) == at(1, 7)  # 08:00 CET is 07:00 UTC


def test_schedule_across_dst_change():
    # Europe/Berlin leaves summer time on 2026-10-25: 08:00 local is 06:00 UTC before, 07:00 UTC after
    berlin = Schedule(start=time(8), end=time(18), timezone="Europe/Berlin")
    sat = datetime(2026, 10, 24, 17, 0, tzinfo=UTC)
    assert berlin.next_start(sat) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "start, end, minutes",
    [
        (at(0, 9), at(0, 9, 0, 59), 0),  # 59 s is not a minute
        (at(0, 9), at(0, 9, 1), 1),
        (at(0, 9), at(0, 10, 30, 30), 90),
        (at(0, 10), at(0, 9), 0),  # end before start
    ],
)
def test_whole_minutes(start, end, minutes):
    assert whole_minutes(start, end) == minutes


def test_fee_rounds_half_up_to_cents_and_caps():
    assert fee_for_minutes(3, Decimal("0.125"), None) == Decimal("0.38")  # 0.375 -> 0.38
    assert fee_for_minutes(100, Decimal("0.50"), Decimal("20.00")) == Decimal("20.00")
    assert fee_for_minutes(0, Decimal("0.50"), Decimal("20.00")) == Decimal("0.00")
    assert fee_for_minutes(7, Decimal("0.50"), None) == Decimal("3.50")


def test_idle_fee_starts_after_grace():
    rules = Rules(idle_grace_min=15, idle_fee_per_min=Decimal("0.40"), idle_fee_cap=Decimal("10.00"))
    assert idle_fee(at(0, 10), at(0, 10, 14), rules) == Decimal("0.00")
    assert idle_fee(at(0, 10), at(0, 10, 25), rules) == Decimal("4.00")
    assert idle_fee(at(0, 10), at(0, 20), rules) == Decimal("10.00")


def test_overstay_math():
    rules = Rules(max_stay_min=120, overstay_fee_per_min=Decimal("0.25"), overstay_fee_cap=Decimal("30.00"))
    assert overstay_minutes(at(0, 9), at(0, 11), rules) == 0
    assert overstay_minutes(at(0, 9), at(0, 11, 30), rules) == 30
    assert overstay_fee(at(0, 9), at(0, 11, 30), rules) == Decimal("7.50")
    assert overstay_fee(at(0, 9), at(1, 9), rules) == Decimal("30.00")
    assert overstay_minutes(at(0, 9), at(3, 9), Rules(max_stay_min=None)) == 0


def test_property_idle_fee_never_exceeds_cap_and_never_decreases():
    rnd = random.Random(5)
    for _ in range(500):
        cap = Decimal(rnd.randint(0, 5000)) / 100
        rules = Rules(
            idle_grace_min=rnd.randint(0, 60),
            idle_fee_per_min=Decimal(rnd.randint(0, 20000)) / 10000,
            idle_fee_cap=cap,
        )
        start = at(0, 9) + timedelta(seconds=rnd.randint(0, 3600))
        ends = sorted(start + timedelta(seconds=rnd.randint(-600, 48 * 3600)) for _ in range(4))
        fees = [idle_fee(start, e, rules) for e in ends]
        assert all(Decimal("0") <= f <= cap for f in fees)
        assert fees == sorted(fees)
        assert all(f == f.quantize(Decimal("0.01")) for f in fees)
