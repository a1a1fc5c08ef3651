"""Presence from reads that come once per car (most ANPR cameras): a pure function of (the car the bay
holds, a read) -> (events, the car it holds now).

* No car held: the read is an arrival.
* The same plate again (or a read without a plate): still present.
* Another plate: the held car left at its last read, the new one arrived.
* The bay's charger ends the transaction or the cable comes out after the car's arrival (`unplugged`):
  the car left then; the cable proved it was there until that moment.
* Silence longer than the source's `presence_timeout_s` (checked by `expire`, and by a read that comes
  after it): the held car left at its last read (nothing proves it stayed longer).
* An explicit "left" message (sources that have one): the held car left then.
A read older than the held car's arrival is only logged (it cannot rewrite the visit)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from models.events import Evidence, PlateRead, VehicleArrived, VehicleDeparted, VehicleStillPresent
from sources.reads import OutsideRead


@dataclass(frozen=True)
class Held:
    """The car a bay holds according to one source (a row of `source_presences`)."""

    source: str
    camera: str
    presence_id: str
    plate: str | None
    confidence: float
    first_seen: datetime
    last_seen: datetime


def departed(held: Held, bay_id: str, at: datetime) -> VehicleDeparted:
    return VehicleDeparted(at=at, presence_id=held.presence_id, camera=held.camera, bay_id=bay_id, plate=held.plate,
                           first_seen=held.first_seen, last_seen=held.last_seen)


def on_read(held: Held | None, read: OutsideRead, *, source: str, camera: str, bay_id: str, timeout_s: float,
            evidence: Evidence = Evidence()) -> tuple[list[object], Held | None]:
    """The events one read implies for its bay, and what the bay holds afterwards. `camera` is the name
    the events carry (`source:camera id`), `evidence` where the read's picture was stored."""
    log = PlateRead(at=read.at, camera=camera, bay_id=bay_id, plate=read.plate, raw_text=read.raw_text,
                    confidence=read.confidence, evidence=evidence)
    events: list[object] = [log]
    if held is not None and read.at < held.first_seen:
        return events, held  # older than the car we hold: the reads log keeps it, the visit does not change
    if held is not None and read.at - held.last_seen > timedelta(seconds=timeout_s):
        events.append(departed(held, bay_id, read.at))
        held = None
    if read.left:
        if held is not None and (read.plate is None or read.plate == held.plate):
            events.append(departed(replace(held, last_seen=max(held.last_seen, read.at)), bay_id, read.at))
            return events, None
        return events, held
    if held is not None and (read.plate is None or held.plate is None or read.plate == held.plate):
        plate = held.plate or read.plate
        now_held = replace(held, last_seen=max(held.last_seen, read.at), plate=plate,
                           confidence=max(held.confidence, read.confidence) if read.plate == plate else held.confidence)
        events.append(VehicleStillPresent(at=read.at, presence_id=held.presence_id, camera=held.camera, bay_id=bay_id,
                                          plate=plate, confidence=now_held.confidence, since=held.first_seen))
        return events, now_held
    if held is not None:  # another car: the one we held left at its last read
        events.append(departed(held, bay_id, read.at))
    new = Held(source=source, camera=camera, presence_id=f"{source}:{bay_id}:{read.message_id}", plate=read.plate,
               confidence=read.confidence, first_seen=read.at, last_seen=read.at)
    events.append(VehicleArrived(at=read.at, presence_id=new.presence_id, camera=camera, bay_id=bay_id,
                                 plate=read.plate, confidence=read.confidence, evidence=evidence))
    return events, new


def expire(held: Held, bay_id: str, now: datetime, timeout_s: float) -> VehicleDeparted | None:
    """The held car's departure once it has not been read for `timeout_s`, reported now, at its last read."""
    if now - held.last_seen <= timedelta(seconds=timeout_s):
        return None
    return departed(held, bay_id, now)


def unplugged(held: Held, bay_id: str, at: datetime) -> VehicleDeparted | None:
    """The held car's departure when its bay's cable came out (or the transaction ended) at `at`, after it
    arrived: seen until then, since the cable proves the car was there."""
    if at < held.first_seen:
        return None
    return departed(replace(held, last_seen=max(held.last_seen, at)), bay_id, at)
