"""Table-driven tests of reads -> presence events, with a fake clock (no video, no OCR)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from anpr.grouping import GroupingOptions, PresenceGrouper, Read, vote
from models.events import Evidence, VehicleArrived, VehicleDeparted, VehicleStillPresent

from .helpers import FakeClock

OPTS = GroupingOptions(
    min_agreeing=3, arrival_timeout_s=15, min_sightings=2, depart_after_s=30, heartbeat_s=300, change_reads=3
)


@dataclass(frozen=True)
class Step:
    at: float  # seconds from the start
    do: str  # "see" | "empty" | "tick"
    texts: tuple[str | None, ...] = ()  # one read per entry; None = plate box with unreadable text
    conf: float = 0.9
    bay: str = "B1"


def see(at: float, *texts: str | None, conf: float = 0.9, bay: str = "B1") -> Step:
    return Step(at, "see", texts, conf, bay)


def empty(at: float, bay: str = "B1") -> Step:
    return Step(at, "empty", bay=bay)


def tick(at: float) -> Step:
    return Step(at, "tick")


def every(start: float, stop: float, step: float, make) -> list[Step]:
    out, t = [], start
    while t < stop:
        out.append(make(t))
        t += step
    return out


def run(steps: list[Step], opts: GroupingOptions = OPTS) -> tuple[list, FakeClock]:
    clock = FakeClock()
    t0 = clock.now
    ids = (f"p{i}" for i in itertools.count(1))
    g = PresenceGrouper("cam1", opts, clock=clock, new_id=lambda: next(ids))
    events: list = []
    for s in sorted(steps, key=lambda s: s.at):
        clock.advance((t0 - clock.now).total_seconds() + s.at)
        if s.do == "see":
            events += g.observe(s.bay, [Read(t, s.conf if t else 0.0, det_confidence=0.8) for t in s.texts])
        elif s.do == "empty":
            events += g.observe(s.bay, [])
        events += g.tick()
    return events, clock


def summary(events: list) -> list[tuple[str, str | None]]:
    short = {VehicleArrived: "arrived", VehicleStillPresent: "still", VehicleDeparted: "departed"}
    return [(short[type(e)], e.plate) for e in events]


TWO_HOURS = 2 * 3600

CASES = {
    "three identical reads arrive once": (
        [see(0, "AB123CD"), see(1, "AB123CD"), see(2, "AB123CD"), see(3, "AB123CD")],
        [("arrived", "AB123CD")],
    ),
    "parked two hours: one arrival, heartbeats, one departure": (
        every(0, TWO_HOURS, 10, lambda t: see(t, "AB123CD"))  # motion gate: a look every 10 s
        + every(TWO_HOURS, TWO_HOURS + 60, 10, empty),
        [("arrived", "AB123CD")] + [("still", "AB123CD")] * 23 + [("departed", "AB123CD")],
    ),
    "one-character OCR slips do not split the visit": (
        [see(0, "AB123CD"), see(1, "AB1Z3CD"), see(2, "A8123CD"), see(3, "AB123CD"), see(4, "AB123CD")],
        [("arrived", "AB123CD")],
    ),
    "never three alike: position voting at the timeout": (
        [see(0, "M5XSX"), see(1, "M5XSK"), see(2, "N5XSX"), see(3, "M5XSK"), see(4, "M5X5X"), tick(16)],
        [("arrived", "M5XSX")],
    ),
    "unreadable plate still arrives (plate=None) and departs": (
        every(0, 20, 1, lambda t: see(t, None)) + every(20, 60, 5, empty),
        [("arrived", None), ("departed", None)],
    ),
    "a single stray sighting is forgotten silently": (
        [see(0, "XY99"), *every(1, 60, 5, empty)],
        [],
    ),
    "short occlusion (empty < D) is the same visit": (
        [
            see(0, "AB123CD"),
            see(1, "AB123CD"),
            see(2, "AB123CD"),
            empty(10),
            empty(20),
            see(25, "AB123CD"),
            *every(26, 50, 4, empty),
        ],
        [("arrived", "AB123CD")],
    ),
    "bay not looked at (camera down) is not an empty bay": (
        [see(0, "AB123CD"), see(1, "AB123CD"), see(2, "AB123CD"), tick(100), tick(1000), tick(5000)],
        [("arrived", "AB123CD")],  # and no heartbeat either: nobody saw it since
    ),
    "swap within D: departure of A, arrival of B": (
        [
            see(0, "AB123CD"),
            see(1, "AB123CD"),
            see(2, "AB123CD"),
            see(10, "ZZ987YY"),
            see(11, "ZZ987YY"),
            see(12, "ZZ987YY"),
        ],
        [("arrived", "AB123CD"), ("departed", "AB123CD"), ("arrived", "ZZ987YY")],
    ),
    "one low-confidence foreign read is noise": (
        [
            see(0, "AB123CD"),
            see(1, "AB123CD"),
            see(2, "AB123CD"),
            see(5, "ZZ987YY", conf=0.3),
            see(6, "ZZ987YY", conf=0.3),
            see(7, "ZZ987YY", conf=0.3),
            see(8, "AB123CD"),
        ],
        [("arrived", "AB123CD")],
    ),
    "two bays are independent": (
        [
            see(0, "AB123CD", bay="B1"),
            see(0, "QQ11QQ", bay="B2"),
            see(1, "AB123CD", bay="B1"),
            see(1, "QQ11QQ", bay="B2"),
            see(2, "AB123CD", bay="B1"),
            see(2, "QQ11QQ", bay="B2"),
            empty(40, bay="B1"),
            see(40, "QQ11QQ", bay="B2"),
        ],
        [("arrived", "AB123CD"), ("arrived", "QQ11QQ"), ("departed", "AB123CD")],
    ),
}


@pytest.mark.parametrize("steps,expected", list(CASES.values()), ids=list(CASES))
def test_grouping_table(steps: list[Step], expected: list) -> None:
    events, _ = run(steps)
    assert summary(events) == expected


def test_departure_carries_first_and_last_seen() -> None:
    steps = every(0, 600, 10, lambda t: see(t, "AB123CD")) + every(600, 700, 10, empty)
    events, _ = run(steps)
    arrived, *_, departed = events
    assert isinstance(departed, VehicleDeparted) and departed.presence_id == arrived.presence_id
    assert (departed.last_seen - departed.first_seen).total_seconds() == 590
    assert (departed.at - departed.last_seen).total_seconds() == 30  # first empty look >= D after
    assert departed.first_seen == FakeClock().now  # the first sighting, not the arrival decision
    heartbeats = [e for e in events if isinstance(e, VehicleStillPresent)]
    assert heartbeats and all(h.since == departed.first_seen for h in heartbeats)


def test_arrival_waits_for_agreement_then_timeout_without_min_sightings() -> None:
    # Stable text: the third identical read arrives, not before.
    events, _ = run([see(0, "AB123CD"), see(1, "AB123CD")])
    assert events == []
    # Timed out with only one sighting: not enough to call it a vehicle.
    events, _ = run([see(0, "AB123CD"), tick(20)])
    assert events == []


def test_vote_position_confidence() -> None:
    reads = [Read("M5XSX", 0.9), Read("M5XSK", 0.9), Read("N5XSX", 0.9)]
    v = vote(reads)
    assert v.text == "M5XSX"
    assert v.agreeing == 1
    # positions 0 and 4 won 2 of 3 votes; the others were unanimous
    assert v.char_confidences == pytest.approx((0.6, 0.9, 0.9, 0.9, 0.6))
    assert v.confidence == pytest.approx(0.6)


def test_vote_groups_similar_and_ignores_outliers() -> None:
    reads = [Read("AB123CD", 0.8)] * 3 + [Read("HELLO", 0.95), Read("AB123C", 0.5)]
    v = vote(reads)
    assert v.text == "AB123CD" and v.agreeing == 3
    assert vote([Read(None, 0.0, det_confidence=0.4), Read(None, 0.0, det_confidence=0.7)]).best == Read(
        None, 0.0, det_confidence=0.7
    )


def test_evidence_callback_gets_best_read_and_failure_does_not_block_arrival(tmp_path) -> None:
    clock = FakeClock()
    calls = []

    def save(presence_id: str, read: Read, at) -> Evidence:
        calls.append((presence_id, read.text, read.confidence))
        return Evidence(frame_path="cam1/x-frame.jpg")

    g = PresenceGrouper("cam1", OPTS, clock=clock, new_id=lambda: "pid1", evidence=save)
    events = []
    for conf in (0.7, 0.95, 0.8):
        events += g.observe("B1", [Read("AB123CD", conf)])
        clock.advance(1)
    assert calls == [("pid1", "AB123CD", 0.95)]
    assert events[0].evidence.frame_path == "cam1/x-frame.jpg"

    def broken(*_a) -> Evidence:
        raise OSError("disk full")

    g = PresenceGrouper("cam1", OPTS, clock=clock, evidence=broken)
    events = []
    for _ in range(3):
        events += g.observe("B1", [Read("AB123CD", 0.9)])
    assert isinstance(events[0], VehicleArrived) and events[0].evidence == Evidence()
