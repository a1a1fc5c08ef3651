"""Whitelist/blacklist entries, fuzzy matching and plate correction."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from enforcement.lists import (
    BlacklistEntry,
    WhitelistEntry,
    correct_plate,
    match_plate,
    normalise_plate,
    plate_distance,
)

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw, norm",
    [("ab-12 c", "AB12C"), ("AB12C", "AB12C"), ("  ", None), ("", None), (None, None), ("é-Ä 7", "7")],
)
def test_normalise_plate(raw, norm):
    assert normalise_plate(raw) == norm


def test_entries_normalise_and_refuse_empty_plates():
    assert WhitelistEntry(plate="ab 123").plate == "AB123"
    with pytest.raises(ValidationError):
        BlacklistEntry(plate="--")
    with pytest.raises(ValidationError):
        WhitelistEntry(plate="AB1", valid_from=NOW, valid_until=NOW)


@pytest.mark.parametrize(
    "plate, entries, max_d, expect",
    [
        ("AB123", [WhitelistEntry(plate="AB123")], 1, ("AB123", 0)),
        ("AB-123", [WhitelistEntry(plate="AB123")], 0, ("AB123", 0)),  # normalised before comparing
        ("AB128", [WhitelistEntry(plate="AB123")], 1, ("AB123", 1)),
        ("AB188", [WhitelistEntry(plate="AB123")], 1, None),  # distance 2 > 1
        ("AB123", [WhitelistEntry(plate="AB123", valid_until=NOW)], 1, None),  # expired (until exclusive)
        ("AB123", [WhitelistEntry(plate="AB123", valid_from=NOW + timedelta(days=1))], 1, None),  # not yet
        ("AB123", [WhitelistEntry(plate="AB123", valid_from=NOW)], 1, ("AB123", 0)),  # from inclusive
        (None, [WhitelistEntry(plate="AB123")], 3, None),
        ("", [WhitelistEntry(plate="AB123")], 3, None),
        ("AB123", [WhitelistEntry(plate="AB124"), WhitelistEntry(plate="AB123")], 1, ("AB123", 0)),  # nearest wins
        ("AB123", [], 1, None),
    ],
)
def test_match_plate(plate, entries, max_d, expect):
    m = match_plate(plate, entries, max_d, NOW)
    assert (None if m is None else (m.entry.plate, m.distance)) == expect


def test_match_ties_are_order_independent():
    bl = [
        BlacklistEntry(plate="AB124", reason="b", priority=3),
        BlacklistEntry(plate="AB122", reason="a", priority=7),
        BlacklistEntry(plate="AB125", reason="c", priority=7),
    ]
    results = set()
    for seed in range(10):
        entries = bl[:]
        random.Random(seed).shuffle(entries)
        m = match_plate("AB123", entries, 1, NOW)
        assert m is not None
        results.add((m.entry.plate, m.distance))
    assert results == {("AB122", 1)}  # highest priority, then plate


def test_plate_distance_cutoff():
    assert plate_distance("AB123", "AB123") == 0
    assert plate_distance("AB123", "XY999", 1) == 2  # capped at max + 1


@pytest.mark.parametrize(
    "read, known, expect",
    [
        ("AB1284", ["AB1234"], ("AB1234", 1)),
        ("AB1234", ["AB1234", "AB1284"], ("AB1234", 0)),  # a known plate is never "corrected"
        ("AB1284", ["AB1234", "AB1294"], None),  # ambiguous: no guess
        ("AB1884", ["AB1234"], None),  # too far
        (None, ["AB1234"], None),
        ("AB1284", [], None),
    ],
)
def test_correct_plate(read, known, expect):
    assert correct_plate(read, known, 1) == expect


def _nearest_by_scan(plate, known, max_distance):
    """The definition, one known plate at a time: the reference for `correct_plate`."""
    wanted = normalise_plate(plate)
    if wanted is None:
        return None
    best_d, best = max_distance + 1, set()
    for raw in known:
        cand = normalise_plate(raw)
        if cand is None:
            continue
        d = plate_distance(wanted, cand, max_distance)
        if d < best_d:
            best_d, best = d, {cand}
        elif d == best_d and d <= max_distance:
            best.add(cand)
    return (next(iter(best)), best_d) if best_d <= max_distance and len(best) == 1 else None


def test_correct_plate_agrees_with_the_scan_it_replaces() -> None:
    # correct_plate runs one C loop over the (normalised, distinct) registry; it must answer exactly as
    # the plain scan does, duplicates, unnormalised and empty registry plates included.
    rng = random.Random(20261206)
    alphabet = "AB0O18I"
    for _ in range(5000):
        known = tuple("".join(rng.choice(alphabet + "- x") for _ in range(rng.randint(0, 6)))
                      for _ in range(rng.randint(0, 6)))
        plate = "".join(rng.choice(alphabet + "-") for _ in range(rng.randint(0, 6)))
        d = rng.randint(0, 3)
        assert correct_plate(plate, known, d) == _nearest_by_scan(plate, known, d), (plate, known, d)
