"""Outside reads without a server: presence derived from once-per-car reads, and each format's parser
on bodies written from the vendors' documented shapes (never copied), good and hostile."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from models.events import PlateRead, VehicleArrived, VehicleDeparted, VehicleStillPresent
from sources.formats import camera_ids, hikvision_reads, platerecognizer_reads, webhook_reads
from sources.presence import expire, on_read, unplugged
from sources.reads import OutsideRead, SourceError

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def read(plate, minutes=0.0, mid=None, left=False, conf=0.9):
    return OutsideRead(camera_id="lane1", plate=plate, confidence=conf, at=T0 + timedelta(minutes=minutes),
                       message_id=mid or f"m{plate}{minutes}", left=left)


def apply(held, r, timeout=600):
    return on_read(held, r, source="hik", camera="hik:lane1", bay_id="B1", timeout_s=timeout)


def kinds(events):
    return [type(e).__name__ for e in events]


def test_a_car_read_once_arrives_then_is_still_present_then_leaves_for_another():
    ev, held = apply(None, read("AB123CD"))
    assert kinds(ev) == ["PlateRead", "VehicleArrived"] and held.plate == "AB123CD"
    ev, held = apply(held, read("AB123CD", 3))
    assert kinds(ev) == ["PlateRead", "VehicleStillPresent"] and held.last_seen == T0 + timedelta(minutes=3)
    ev, held2 = apply(held, read(None, 4))  # a car without a readable plate: the same car, still there
    assert kinds(ev) == ["PlateRead", "VehicleStillPresent"]
    ev, held3 = apply(held2, read("XY999ZZ", 5))
    assert kinds(ev) == ["PlateRead", "VehicleDeparted", "VehicleArrived"]
    dep = ev[1]
    assert isinstance(dep, VehicleDeparted) and dep.last_seen == T0 + timedelta(minutes=4)  # its last read
    assert held3.plate == "XY999ZZ" and held3.presence_id != held.presence_id


def test_silence_past_the_timeout_is_a_departure_at_the_last_read():
    _, held = apply(None, read("AB123CD"))
    assert expire(held, "B1", T0 + timedelta(minutes=9), 600) is None
    dep = expire(held, "B1", T0 + timedelta(minutes=11), 600)
    assert dep is not None and dep.last_seen == T0 and dep.at == T0 + timedelta(minutes=11)
    ev, held2 = apply(held, read("AB123CD", 30))  # the same plate after the timeout: a new visit
    assert kinds(ev) == ["PlateRead", "VehicleDeparted", "VehicleArrived"] and held2.first_seen == ev[2].at


def test_the_cable_proves_presence_until_it_comes_out():
    _, held = apply(None, read("AB123CD"))
    dep = unplugged(held, "B1", T0 + timedelta(minutes=95))
    assert dep is not None and dep.last_seen == T0 + timedelta(minutes=95)
    assert unplugged(held, "B1", T0 - timedelta(minutes=1)) is None  # a transaction that ended before it came


def test_explicit_left_and_old_reads():
    _, held = apply(None, read("AB123CD", 10))
    ev, same = apply(held, read("ZZ1", 5))  # older than the car we hold: logged only
    assert kinds(ev) == ["PlateRead"] and same == held
    ev, gone = apply(held, read("AB123CD", 20, left=True))
    assert kinds(ev) == ["PlateRead", "VehicleDeparted"] and gone is None
    assert isinstance(ev[0], PlateRead) and not isinstance(ev[1], VehicleArrived | VehicleStillPresent)


def test_webhook_json_reads_and_refusals():
    body = json.dumps({"reads": [{"id": "r1", "camera": "lane1", "plate": "ab-123 cd", "confidence": 0.93,
                                  "at": "2026-12-06T09:00:00Z"},
                                 {"id": "r2", "camera": "lane1", "event": "left", "at": 1796547600}]}).encode()
    r1, r2 = webhook_reads(body, T0)
    assert r1.plate == "AB123CD" and r1.confidence == 0.93 and r1.at == T0
    assert r2.left and r2.at.year == 2026
    for bad, why in [(b"nope", "not JSON"), (b'{"id": "x"}', "camera"), (b'{"id": 5, "camera": "c"}', "id"),
                     (json.dumps({"id": "x", "camera": "c", "at": "2026-12-06T09:00:00"}).encode(), "offset"),
                     (json.dumps({"reads": [{"id": str(i), "camera": "c"} for i in range(101)]}).encode(), "100")]:
        with pytest.raises(SourceError, match=why):
            webhook_reads(bad, T0)


PR = {"hook": {"target": "https://example.org/hook", "id": 7, "event": "recognition"},
      "data": {"camera_id": "gate-2", "timestamp": "2026-12-06T09:01:02.345Z", "filename": "gate-2.jpg",
               "results": [{"plate": "7abc123", "score": 0.904, "dscore": 0.81,
                            "region": {"code": "us-ca", "score": 0.76},
                            "box": {"xmin": 10, "ymin": 20, "xmax": 90, "ymax": 50},
                            "candidates": [{"plate": "7abc123", "score": 0.904}]}]}}


def test_plate_recognizer_webhook():
    (r,) = platerecognizer_reads(PR, T0)
    assert (r.camera_id, r.plate, r.confidence) == ("gate-2", "7ABC123", 0.904)
    assert "us-ca" in r.raw_text and r.at == datetime(2026, 12, 6, 9, 1, 2, 345000, tzinfo=UTC)
    assert platerecognizer_reads({"data": {"camera_id": "x", "results": []}}, T0) == []
    with pytest.raises(SourceError, match="data"):
        platerecognizer_reads({"results": []}, T0)


def hik_xml(plate="AB123CD", event="ANPR", ns=' xmlns="http://www.hikvision.com/ver20/XMLSchema"', extra=""):
    return f"""<?xml version="1.0" encoding="UTF-8"?>{extra}
<EventNotificationAlert version="2.0"{ns}>
  <ipAddress>10.0.0.21</ipAddress><portNo>80</portNo><protocol>HTTP</protocol>
  <channelID>1</channelID><dateTime>2026-12-06T10:00:05+01:00</dateTime>
  <activePostCount>1</activePostCount><eventType>{event}</eventType><eventState>active</eventState>
  <eventDescription>ANPR</eventDescription>
  <ANPR><country>3</country><licensePlate>{plate}</licensePlate><line>1</line>
    <direction>forward</direction><confidenceLevel>87</confidenceLevel><plateType>unknown</plateType>
    <plateColor>white</plateColor><vehicleType>vehicle</vehicleType></ANPR>
</EventNotificationAlert>""".encode()


def test_hikvision_event_alert():
    (r,) = hikvision_reads(hik_xml(), T0, [("licensePlatePicture.jpg", b"\xff\xd8crop"),
                                          ("detectionPicture.jpg", b"\xff\xd8frame")])
    assert r.plate == "AB123CD" and r.confidence == 0.87 and r.at == T0 + timedelta(seconds=5)
    assert r.image == b"\xff\xd8frame" and r.crop == b"\xff\xd8crop"
    assert camera_ids(r) == ["10.0.0.21/1", "10.0.0.21", "1"]
    assert hikvision_reads(hik_xml(ns=""), T0)[0].plate == "AB123CD"
    assert hikvision_reads(hik_xml(event="videoloss"), T0) == []  # heartbeats and the like: no read
    assert hikvision_reads(hik_xml(plate="unknown"), T0)[0].plate is None


@pytest.mark.parametrize("body, why", [
    (hik_xml(extra='<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>').replace(b"AB123CD", b"&b;"),
     "entities"),
    (b"<EventNotificationAlert><eventType>ANPR", "well-formed"),
    (b"<other/>", "EventNotificationAlert"),
    (b"<a>" + b"x" * 300_000 + b"</a>", "256 KiB"),
])
def test_hikvision_hostile_xml_is_refused(body, why):
    with pytest.raises(SourceError, match=why):
        hikvision_reads(body, T0)
