"""Dahua ANPR cameras (sources of kind dahua): the subscription stream parsed in any slicing and bounded,
events turned into reads, and the component against a real HTTP server on 127.0.0.1 that asks for Digest
authentication and streams TrafficJunction events with JPEG pictures and heartbeats, as the camera's
documented snapManager subscription does (bodies written here from that description, never copied)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from sqlmodel import Session, select

from models.db import upgrade
from models.settings import ConfigError
from models.tables import Presence, SourceCounter, SourcePresence, StoredEvent
from service.build import build_context
from service.dahua import SUBSCRIBE, DahuaComponent
from service.enforcement_control import EnforcementComponent
from sources.dahua import (
    MAX_HEADERS,
    MAX_PICTURE,
    MAX_TEXT,
    DahuaEvent,
    StreamParser,
    boundary_of,
    event_reads,
    mapped_camera,
    text_reads,
)
from sources.reads import OutsideRead, SourceError
from tests.foundation.helpers import make_settings

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SCENE = b"\xff\xd8scene" + bytes(range(256)) + b"\xff\xd9"
CROP = b"\xff\xd8plate" + bytes(range(64)) + b"\xff\xd9"


def part(ctype: str, body: bytes, *, length: bool = True, nl: bytes = b"\r\n",
         boundary: bytes = b"myboundary") -> bytes:
    head = b"--" + boundary + nl + b"Content-Type: " + ctype.encode() + nl
    if length:
        head += b"Content-Length: %d" % len(body) + nl
    return head + nl + body + nl


def event_text(n: int = 0, nl: str = "\r\n", **fields: object) -> bytes:
    base = {"Code": "TrafficJunction", "Action": "Pulse", "Channel": 0, "Lane": 1, "UTC": 1793610000,
            "TrafficCar.PlateNumber": "AB-123 CD", "TrafficCar.PlateColor": "Yellow", "Object.Text": "AB-123 CD",
            "TrafficCar.Confidence": 87, "GroupID": 123, "IndexInGroup": 1, "CountInGroup": 1}
    base.update({k.replace("__", "."): v for k, v in fields.items()})
    return nl.join(f"Events[{n}].{k}={v}" for k, v in base.items() if v is not None).encode() + nl.encode()


def sample_stream(length: bool = True, nl: bytes = b"\r\n") -> bytes:
    """Heartbeat, an event with scene + plate pictures, heartbeat, a part with two events and one picture,
    heartbeat: three events in all."""
    two = event_text(0, Channel=1, Lane=None, UTC=1793610060, GroupID=124, TrafficCar__PlateNumber="ZX987",
                     TrafficCar__Confidence=0.93) + event_text(1, Channel=2, GroupID=125, TrafficCar__PlateNumber="Q1")
    return (b"preamble the parser skips\r\n"
            + part("text/plain", b"Heartbeat", length=length, nl=nl)
            + part("text/plain", event_text(nl=nl.decode()), length=length, nl=nl)
            + part("image/jpeg", SCENE, length=length, nl=nl)
            + part("image/jpeg", CROP, length=length, nl=nl)
            + part("text/plain", b"Heartbeat", length=length, nl=nl)
            + part("text/plain", two, length=length, nl=nl)
            + part("image/jpeg", SCENE, length=length, nl=nl)
            + part("text/plain", b"Heartbeat", length=length, nl=nl)
            + b"--myboundary" + nl)  # the next part begins: a part without a length ends here


def parse(chunks: list[bytes]) -> tuple[list[DahuaEvent], StreamParser]:
    parser = StreamParser()
    out: list[DahuaEvent] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out, parser


def summary(events: list[DahuaEvent]) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(e.fields.get("Channel", ""), e.fields.get("TrafficCar.PlateNumber", ""),
             tuple(len(p) for p in e.pictures)) for e in events]


# --- the stream parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "to-boundary"])
@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_the_same_events_whatever_the_stream_is_cut_into(length, nl):
    data = sample_stream(length, nl)
    whole, parser = parse([data])
    assert summary(whole) == [("0", "AB-123 CD", (len(SCENE), len(CROP))), ("1", "ZX987", (len(SCENE),)),
                              ("2", "Q1", (len(SCENE),))]
    assert parser.heartbeats == 3 and whole[0].pictures == (SCENE, CROP)
    for cut in range(1, len(data)):
        assert summary(parse([data[:cut], data[cut:]])[0]) == summary(whole), f"split at byte {cut}"
    assert summary(parse([data[i:i + 1] for i in range(len(data))])[0]) == summary(whole)


def test_several_events_in_one_part_get_one_picture_each_when_the_camera_sends_one_each():
    two = event_text(0, GroupID=1) + event_text(1, Channel=3, GroupID=2)
    one_each = part("text/plain", two) + part("image/jpeg", SCENE) + part("image/jpeg", CROP)
    events, _ = parse([one_each])  # complete as soon as both pictures came: no heartbeat needed
    assert [e.pictures for e in events] == [(SCENE,), (CROP,)]
    events, _ = parse([part("text/plain", two) + part("image/jpeg", SCENE) + part("text/plain", b"Heartbeat")])
    assert [e.pictures for e in events] == [(SCENE,), (SCENE,)]  # one picture for both: both keep it


def test_heartbeats_and_stray_parts_make_no_events():
    data = (part("text/plain", b"Heartbeat\r\n") * 3 + part("image/jpeg", SCENE)  # a picture without event
            + part("application/octet-stream", b"\x00" * 100) + part("text/plain", b"Error\r\nBad Request!"))
    events, parser = parse([data])
    assert events == [] and parser.heartbeats == 3 and parser.orphan_pictures == 1
    pending, parser = parse([part("text/plain", event_text()) + part("image/jpeg", SCENE)])
    assert pending == []  # a plate cut-out may still come
    assert summary(parser.close()) == [("0", "AB-123 CD", (len(SCENE),))]  # the stream ended: as it is
    assert parse([b"--myboundary--\r\n" + part("text/plain", event_text())])[0] == []  # after the closing one


def test_boundary_from_the_content_type():
    assert boundary_of("multipart/x-mixed-replace; boundary=myboundary") == "myboundary"
    assert boundary_of('multipart/x-mixed-replace;boundary="other"') == "other"
    assert boundary_of("multipart/x-mixed-replace") == "myboundary"
    parser = StreamParser("other")
    assert len(parser.feed(part("text/plain", event_text(), boundary=b"other") + part("text/plain", b"Heartbeat",
                                                                                     boundary=b"other"))) == 1


@pytest.mark.parametrize("data, reason", [
    (b"--myboundary\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % (MAX_TEXT + 1), "text part of"),
    (b"--myboundary\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (MAX_PICTURE + 1), "picture part"),
    (b"--myboundary\r\nContent-Type: text/plain\r\n\r\n" + b"x=y\r\n" * (MAX_TEXT // 5 + 10), "without Content-Length"),
    (b"--myboundary\r\nContent-Type: image/jpeg\r\n\r\n" + b"\xff" * (MAX_PICTURE + 100), "without Content-Length"),
    (b"--myboundary\r\nContent-Type: text/plain\r\n" + b"X-Pad: " + b"a" * MAX_HEADERS + b"\r\n", "header block"),
    (b"--myboundary\r\n" + b"X: y\r\n" * (MAX_HEADERS // 6 + 1), "header block"),
    (b"--myboundary\r\nContent-Type: text/plain\r\nContent-Length: -5\r\n\r\n", "Content-Length"),
    (b"--myboundary\r\nthis is not a header\r\n\r\n", "malformed part header"),
    (b"HTTP garbage without any boundary\r\n" * 300, "no multipart boundary"),
    (bytes(random.Random(7).randrange(256) for _ in range(20000)), "boundary"),
], ids=["text-length", "picture-length", "text-unbounded", "picture-unbounded", "header-line", "header-lines",
        "bad-length", "bad-header", "no-boundary", "random-bytes"])
def test_a_part_over_its_bound_or_garbage_is_a_source_error(data, reason):
    with pytest.raises(SourceError, match=reason):
        parse([data])
    with pytest.raises(SourceError, match=reason):  # the same in small pieces: bounded before it is all read
        parse([data[i:i + 997] for i in range(0, len(data), 997)])


def test_a_mangled_stream_raises_source_error_or_parses_never_anything_else():
    data = sample_stream()
    rnd = random.Random(11)
    for _ in range(300):
        mangled = bytearray(data)
        for _ in range(rnd.randrange(1, 8)):
            mangled[rnd.randrange(len(mangled))] = rnd.randrange(256)
        try:
            events, _ = parse([bytes(mangled)])
        except SourceError:
            continue
        for event in events:
            with contextlib.suppress(SourceError):  # e.g. a channel that is no longer a number
                event_reads(event, NOW)


# --- events to reads ---------------------------------------------------------------------------------


def one(text: bytes, pictures: tuple[bytes, ...] = ()) -> OutsideRead:
    (fields,) = [e.fields for e in parse([part("text/plain", text) + part("text/plain", b"Heartbeat")])[0]]
    (read,) = event_reads(DahuaEvent(fields, pictures), NOW)
    return read


def test_an_event_becomes_a_read():
    read = one(event_text(), (SCENE, CROP))
    assert (read.camera_id, read.plate, read.confidence) == ("0/1", "AB123CD", 0.87)
    assert read.at == datetime.fromtimestamp(1793610000, UTC) and read.raw_text == "AB-123 CD (Yellow)"
    assert (read.image, read.crop) == (SCENE, CROP)
    assert one(event_text(), (CROP, SCENE)).image == SCENE  # the cut-out first: the larger is the scene
    assert one(event_text(), (b"GIF89a", SCENE, CROP, CROP[:-1])).crop == CROP  # the first two JPEGs
    assert one(event_text(), (b"GIF89a",)).image is None  # not a JPEG: the read without a picture
    no_lane = one(event_text(Lane=None, Channel=None, Index=4))
    assert no_lane.camera_id == "4"
    assert one(event_text(Lane="x")).camera_id == "0"  # an unusable lane: the channel's mapping
    with pytest.raises(SourceError, match="channel"):
        one(event_text(Channel="../etc"))
    assert event_reads(DahuaEvent({"Code": "VideoMotion", "Channel": "0"}), NOW) == []


@pytest.mark.parametrize("plate", ["", "Unknown", "无牌", "无车牌", "NoPlate", "  ", None])
def test_no_plate_reads_have_no_plate_and_no_confidence(plate):
    read = one(event_text(TrafficCar__PlateNumber=plate, Object__Text=None))
    assert read.plate is None and read.confidence == 0.0


@pytest.mark.parametrize("fields, confidence", [
    ({"TrafficCar__Confidence": 87}, 0.87), ({"TrafficCar__Confidence": "0.93"}, 0.93),
    ({"TrafficCar__Confidence": None, "Object__Confidence": 64}, 0.64), ({"TrafficCar__Confidence": 100}, 1.0),
    ({"TrafficCar__Confidence": 250}, 1.0), ({"TrafficCar__Confidence": -3}, 0.0),
    ({"TrafficCar__Confidence": None}, 0.5), ({"TrafficCar__Confidence": "nan"}, 0.5),
    ({"TrafficCar__Confidence": None, "TrafficCar__PlateNumber": None, "Object__Text": "xy 12"}, 0.5),
])
def test_confidence_is_normalised_to_0_1(fields, confidence):
    assert one(event_text(**fields)).confidence == confidence


@pytest.mark.parametrize("fields, at", [
    ({"UTC": 1793610000, "UTCMS": 250}, datetime.fromtimestamp(1793610000.25, UTC)),
    ({"UTC": 1793613600, "RealUTC": 1793610000}, datetime.fromtimestamp(1793610000, UTC)),  # local time in UTC
    ({"UTC": None, "UTCMS": 1793610000500}, datetime.fromtimestamp(1793610000.5, UTC)),
    ({"UTC": None}, NOW), ({"UTC": "yesterday"}, NOW), ({"UTC": 12}, NOW),  # a clock never set
    ({"UTC": 4102444800}, NOW),  # the year 2100
])
def test_the_time_comes_from_the_camera_when_plausible(fields, at):
    assert one(event_text(**fields)).at == at


def test_the_message_id_is_stable_for_the_same_event_only():
    first = one(event_text(), (SCENE,))
    assert one(event_text(), (SCENE,)).message_id == first.message_id  # replayed after a reconnect
    assert one(event_text(), ()).message_id == first.message_id  # the pictures do not make it another event
    for other in ({"GroupID": 124}, {"UTC": 1793610001}, {"Channel": 1}, {"Lane": 2},
                  {"TrafficCar__PlateNumber": "AB123CE"}):
        assert one(event_text(**other)).message_id != first.message_id, other
    bare = {"GroupID": None, "UTC": None}
    assert one(event_text(**bare), (SCENE,)).message_id == one(event_text(**bare), (SCENE,)).message_id
    assert one(event_text(**bare), (SCENE,)).message_id != one(event_text(**bare), (CROP,)).message_id


def test_the_lane_wins_over_the_channel_and_is_never_taken_for_a_channel():
    read = one(event_text(Channel=0, Lane=1))
    assert mapped_camera(read, ["0", "0/1"]) == "0/1"
    assert mapped_camera(read, ["0", "0/2"]) == "0"
    assert mapped_camera(read, ["1", "2/1"]) is None  # "1" is channel 1, not lane 1 of channel 0
    assert mapped_camera(one(event_text(Lane=None)), ["0/1", "0"]) == "0"


def test_text_reads_for_the_dashboard_sample():
    (read,) = text_reads(event_text(nl="\n"), NOW)
    assert read.plate == "AB123CD" and read.image is None
    legacy = b"Code=TrafficJunction\nChannel=2\nTrafficCar.PlateNumber=XY12\n"  # no Events[0]. prefix
    assert [(r.camera_id, r.plate) for r in text_reads(legacy, NOW)] == [("2", "XY12")]
    with pytest.raises(SourceError):
        text_reads(b"x" * (MAX_TEXT + 1), NOW)


# --- settings -----------------------------------------------------------------------------------------


def dahua_source(**over: object) -> dict:
    return {"name": "gate", "kind": "dahua", "device_url": "http://192.0.2.10", "username": "admin",
            "secret": "camera-pw", "cameras": [{"id": "0/1", "bay_id": "B1"}], **over}


@pytest.mark.parametrize("over, message", [
    ({"device_url": None}, "needs device_url"),
    ({"username": None}, "needs username"),
    ({"secret": None}, "needs secret"),
    ({"secret": "short"}, "at least 8 characters"),
    ({"device_url": "http://admin:pw@192.0.2.10"}, "put it in username and secret"),
    ({"device_url": "http://192.0.2.10/cgi-bin/snapManager.cgi?action=attachFileProc"}, "address only"),
    ({"device_url": "http://192.0.2.10:99999"}, "port"),
    ({"device_url": "rtsp://192.0.2.10"}, "device_url"),
    ({"cameras": [{"id": "lane1", "bay_id": "B1"}]}, "<channel>/<lane>"),
])
def test_a_dahua_source_needs_the_cameras_address_and_login(tmp_path, over, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings(tmp_path, "sqlite://", sources=[dahua_source(**over)])


def test_the_component_runs_only_for_enabled_dahua_sources(tmp_path):
    off = {"api": False, "scheduler": False, "cameras": False, "enforcement": False}
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", components=off,
                             sources=[dahua_source(device_url="https://cam.example:8443/")])
    assert settings.sources[0].device_url == "https://cam.example:8443"
    assert settings.sources[0].secret.get_secret_value() == "camera-pw"
    ctx = build_context(settings)
    assert [c.name for c in ctx.components] == ["dahua"]
    ctx.engine.dispose()
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", components=off,
                             sources=[dahua_source(enabled=False)])
    ctx = build_context(settings)
    assert ctx.components == []
    ctx.engine.dispose()


# --- end to end: a camera on 127.0.0.1 ------------------------------------------------------------------


def jpeg(w: int, h: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", pixels)
    assert ok
    return buf.tobytes()


class FakeCamera:
    """A Dahua camera's subscription as documented: Digest (qop=auth, MD5) checked properly, then a
    multipart stream. User `admin` gets `script(connection)`; user `big` a part over its bound."""

    REALM = "Login to 5A0F1B2C"

    def __init__(self, password: str, script: Callable[[int], list[bytes]]) -> None:
        self.password = password
        self.script = script
        self.nonces: set[str] = set()
        self.paths: list[str] = []
        self.streams = 0  # authenticated subscriptions of admin
        self.refused = 0
        self.halt = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.paths.append(self.path)
                user = camera.authorised(self.headers.get("Authorization", ""), self.path)
                if user is None:
                    camera.challenge(self)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=myboundary")
                self.end_headers()
                try:
                    if user == "big":
                        self.wfile.write(b"--myboundary\r\nContent-Type: text/plain\r\nContent-Length: 70000\r\n\r\n")
                        camera.halt.wait(5)
                        return
                    n = camera.streams
                    camera.streams += 1
                    for chunk in camera.script(n):
                        self.wfile.write(chunk)
                    if n == 0:
                        return  # the first connection ends (the camera rebooted)
                    # Then heartbeats as slowly as a real camera: stop() must not wait for the next one.
                    while not camera.halt.wait(5):
                        self.wfile.write(part("text/plain", b"Heartbeat"))
                except OSError:
                    pass  # the subscriber went away

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def challenge(self, handler: BaseHTTPRequestHandler) -> None:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", f'Digest realm="{self.REALM}", qop="auth", nonce="{nonce}", '
                                                f'opaque="{secrets.token_hex(8)}"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def authorised(self, header: str, uri: str) -> str | None:
        """The user name when the Digest answer is right (RFC 7616, MD5, qop=auth), else None."""
        if not header.startswith("Digest "):
            return None
        params = {k: v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', header[7:])}
        need = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(k not in params for k in need) or params["nonce"] not in self.nonces:
            return None
        if params["realm"] != self.REALM or params["uri"] != uri or params["qop"] != "auth":
            return None
        if params["username"] not in ("admin", "big"):
            return None

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{params['username']}:{self.REALM}:{self.password}")
        ha2 = md5(f"GET:{uri}")
        want = md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
        if not hmac.compare_digest(want, params["response"]):
            self.refused += 1
            return None
        return params["username"]

    def close(self) -> None:
        self.halt.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def camera_stream(clock):
    """Per connection: a heartbeat, event A (channel 0 lane 1, scene + plate pictures), event B (channel 1)
    with event C (channel 2, not mapped) in one part and one picture, a heartbeat. The first connection
    then ends (the camera rebooted); the second sends the same again (a replay) and stays open."""
    scene, crop, scene_b = jpeg(320, 240, 1), jpeg(96, 32, 2), jpeg(320, 240, 3)
    t = int(clock().timestamp()) - 5
    bc = (event_text(0, Channel=1, Lane=None, UTC=t + 2, GroupID=9, TrafficCar__PlateNumber="ZX 987",
                     TrafficCar__Confidence=0.93)
          + event_text(1, Channel=2, UTC=t + 2, GroupID=10, TrafficCar__PlateNumber="QQ111"))

    def script(connection: int) -> list[bytes]:
        chunks = [b"--myboundary\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nHeartbeat\r\n",
                  part("text/plain", event_text(UTC=t, GroupID=8)), part("image/jpeg", scene),
                  part("image/jpeg", crop), part("text/plain", bc), part("image/jpeg", scene_b),
                  part("text/plain", b"Heartbeat")]
        if connection == 0:
            chunks.append(b"--myboundary--\r\n")  # the closing boundary, then the connection ends
        return chunks

    return script, (scene, crop, scene_b), t


@pytest.mark.timeout(60)
def test_a_dahua_camera_is_subscribed_and_its_reads_are_stored_once(tmp_path, db_url, clock, camera_stream):
    script, (scene, crop, scene_b), t = camera_stream
    camera = FakeCamera("camera-password", script)
    cams = [{"id": "0/1", "bay_id": "B1"}, {"id": "0", "bay_id": "B3"}, {"id": "1", "bay_id": "B2"}]
    settings = make_settings(
        tmp_path, db_url,
        sources=[
            {"name": "gate", "kind": "dahua", "device_url": camera.url, "username": "admin",
             "secret": "camera-password", "cameras": cams},
            {"name": "wrongpw", "kind": "dahua", "device_url": camera.url, "username": "admin",
             "secret": "not-the-password", "cameras": cams},
            {"name": "broken", "kind": "dahua", "device_url": camera.url, "username": "big",
             "secret": "camera-password", "cameras": cams},
            {"name": "off", "kind": "dahua", "device_url": "http://192.0.2.1", "username": "admin",
             "secret": "camera-password", "cameras": cams, "enabled": False},
        ],
        enforcement={"bays": [{"bay_id": b} for b in ("B1", "B2", "B3")]},
    )
    upgrade(db_url)
    ctx = build_context(settings, clock=clock, components=[])
    part_ = DahuaComponent(ctx, backoff_s=(0.05, 0.4))
    assert [s.name for s in part_.sources] == ["gate", "wrongpw", "broken"]

    def counter(name: str) -> SourceCounter:
        with Session(ctx.engine) as db:
            return db.get(SourceCounter, name) or SourceCounter(source=name)

    async def main() -> float:
        await part_.start()
        try:
            deadline = time.monotonic() + 20
            # Two connections' events: A and B stored each time (the second time as replays), C refused;
            # the wrong password tried twice, the broken stream dropped twice.
            while not (counter("gate").accepted >= 4 and counter("gate").rejected >= 2 and camera.streams >= 2
                       and camera.refused >= 2 and counter("broken").rejected >= 2):
                assert time.monotonic() < deadline, (counter("gate"), counter("wrongpw"), camera.streams)
                await asyncio.sleep(0.05)
        finally:
            began = time.monotonic()
            await part_.stop()
        return time.monotonic() - began

    try:
        took = asyncio.run(main())
    finally:
        camera.close()
    assert took < 2.0, f"stop() took {took:.1f} s"  # it did not wait for the camera's next heartbeat
    assert all(not th.is_alive() for th in threading.enumerate() if th.name.startswith("dahua-"))
    assert set(camera.paths) == {SUBSCRIBE.format(hb=5)}  # brackets as the camera's API writes them

    with Session(ctx.engine) as db:
        rows = list(db.exec(select(StoredEvent).order_by(StoredEvent.seq)))
        held = {p.bay_id: p for p in db.exec(select(SourcePresence))}
    assert [e.kind for e in rows].count("plate_read") == 2  # the replay stored nothing more
    arrived = {e.payload["bay_id"]: e.payload for e in rows if e.kind == "vehicle_arrived"}
    assert set(arrived) == {"B1", "B2"}  # lane 1 of channel 0 is B1, not channel 0's B3
    a, b = arrived["B1"], arrived["B2"]
    assert (a["plate"], a["confidence"], a["camera"]) == ("AB123CD", 0.87, "gate:0/1")
    assert datetime.fromisoformat(a["at"]) == datetime.fromtimestamp(t, UTC)
    assert (b["plate"], b["confidence"], b["camera"]) == ("ZX987", 0.93, "gate:1")
    evidence = settings.evidence_dir
    assert (evidence / a["evidence"]["frame_path"]).read_bytes() == scene
    assert (evidence / a["evidence"]["crop_path"]).read_bytes() == crop
    assert (evidence / b["evidence"]["frame_path"]).read_bytes() == scene_b
    assert held["B1"].plate == "AB123CD" and held["B2"].plate == "ZX987"

    gate, wrong, broken = counter("gate"), counter("wrongpw"), counter("broken")
    assert gate.rejected == 2 and "camera '2/1'" in gate.last_error and "not mapped" in gate.last_error
    assert wrong.accepted == 0 and wrong.rejected == 1  # counted once, not at every retry
    assert "refused the login (HTTP 401)" in wrong.last_error
    assert "stream dropped" in broken.last_error and "70000" in broken.last_error
    assert counter("off").rejected == 0

    # The engine takes the arrival like any camera's: the visit's presence keeps the camera's pictures.
    engine_part = EnforcementComponent(ctx)
    engine_part.service = engine_part._build()
    engine_part.drain()
    with Session(ctx.engine) as db:
        presence = db.get(Presence, a["presence_id"])
    assert presence is not None and presence.plate == "AB123CD"
    assert (evidence / presence.frame_path).read_bytes() == scene
    assert (evidence / presence.crop_path).read_bytes() == crop
    ctx.engine.dispose()


@pytest.mark.timeout(30)
def test_stop_is_prompt_while_the_camera_is_away(tmp_path, sqlite_url, clock):
    camera = FakeCamera("camera-password", lambda n: [])
    url = camera.url
    camera.close()  # nothing listens there now: connection refused, retried with backoff
    settings = make_settings(tmp_path, sqlite_url, sources=[dahua_source(device_url=url)])
    upgrade(sqlite_url)
    ctx = build_context(settings, clock=clock, components=[])
    part_ = DahuaComponent(ctx, backoff_s=(0.05, 60))

    def rejected() -> int:
        with Session(ctx.engine) as db:
            row = db.get(SourceCounter, "gate")
            return row.rejected if row else 0

    async def main() -> float:
        await part_.start()
        deadline = time.monotonic() + 10
        while not rejected():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a few retries: 0.05, 0.1, 0.2 ...
        began = time.monotonic()
        await part_.stop()
        return time.monotonic() - began

    assert asyncio.run(main()) < 1.0
    assert rejected() == 1  # the same reason at each retry: counted once
    with Session(ctx.engine) as db:
        assert "connection to the camera failed" in db.get(SourceCounter, "gate").last_error
    ctx.engine.dispose()



def test_the_sources_page_decodes_a_pasted_dahua_event_with_lane_mapping(tmp_path):
    from api.routes.dash_admin import decode_sample
    from models.db import make_engine
    from service.context import AppContext

    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)  # the page decodes with the sources in use, read from the database
    settings = make_settings(tmp_path, url, sources=[
        {"name": "gate", "kind": "dahua", "device_url": "http://192.0.2.10", "username": "bw",
         "secret": "camera-pw1", "cameras": [{"id": "0/1", "bay_id": "B1"}, {"id": "1", "bay_id": "B7"}]}])
    ctx = AppContext(settings=settings, engine=make_engine(url), clock=lambda: datetime(2026, 12, 6, 9, tzinfo=UTC),
                     leases=object())
    lane = event_text(0, **{"Channel": 0, "Lane": 1, "TrafficCar.PlateNumber": "AB123CD"}).decode()
    (read,) = decode_sample(ctx, "gate", lane)["reads"]
    assert read["camera"] == "0/1" and read["bay"] == "B1" and read["plate"] == "AB123CD"
    other = event_text(0, **{"Channel": 0, "Lane": 2, "TrafficCar.PlateNumber": "XY1"}).decode()
    assert decode_sample(ctx, "gate", other)["reads"][0]["bay"] is None  # lane 2 of channel 0 is not channel 1
    ctx.engine.dispose()
