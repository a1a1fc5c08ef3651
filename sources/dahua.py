"""Dahua ITC/IPC ANPR cameras: the snapManager event subscription, parsed without any network.

Baywarden subscribes (`GET /cgi-bin/snapManager.cgi?action=attachFileProc&Flags[0]=Event&Events=[TrafficJunction]
&heartbeat=5`, HTTP Digest) and the camera answers with a never-ending `multipart/x-mixed-replace` body: per
event a `text/plain` part of `key=value` lines (`Events[0].Code=TrafficJunction`, `Events[0].TrafficCar.PlateNumber`,
...) followed by its `image/jpeg` parts (scene, sometimes a plate cut-out); `Heartbeat` text parts in between.

`StreamParser` is fed the body in any slicing and gives complete `DahuaEvent`s; `event_reads` turns one into
`OutsideRead`s. Every part is bounded (text 64 KiB, picture 8 MiB, header block 8 KiB): a camera that breaks
a bound raises `SourceError`, and its connection is dropped rather than buffered without end.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sources.formats import UNKNOWN_CONFIDENCE, normalise
from sources.reads import OutsideRead, SourceError

MAX_TEXT = 64 * 1024
MAX_PICTURE = 8 * 1024 * 1024
MAX_HEADERS = 8 * 1024
MAX_EVENTS = 16  # Events[i] kept per text part: bounds the pictures held for them too
DEFAULT_BOUNDARY = "myboundary"
JPEG = b"\xff\xd8"

_EVENT_KEY = re.compile(r"^Events\[(\d{1,6})\]\.(.+)$")
_LENGTH = re.compile(r"^\d{1,10}$")
_NUMBER = re.compile(r"^\d{1,4}$")
_STAMP = re.compile(r"^\d{1,14}(\.\d{1,6})?$")
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # a camera clock before this was never set


@dataclass(frozen=True)
class DahuaEvent:
    """One `Events[i]` of a text part: its keys without the prefix (`Code`, `TrafficCar.PlateNumber`) and
    the pictures that followed the part."""

    fields: Mapping[str, str]
    pictures: tuple[bytes, ...] = ()


def parse_fields(text: str) -> list[dict[str, str]]:
    """The events of one text part, in index order. Lines that are not `key=value` are skipped; a part
    with no `Events[i].` keys but a `Code=` (older firmware) is one event."""
    events: dict[int, dict[str, str]] = {}
    top: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        m = _EVENT_KEY.match(key)
        if m is None:
            top[key] = value
        elif int(m[1]) < MAX_EVENTS:
            events.setdefault(int(m[1]), {})[m[2]] = value
    if not events and "Code" in top:
        return [top]
    return [events[i] for i in sorted(events)]


def boundary_of(content_type: str) -> str:
    """The boundary named in a `multipart/...; boundary=...` header; Dahua's usual one when absent."""
    m = re.search(r"boundary\s*=\s*\"?([^\";\s]{1,70})", content_type, re.IGNORECASE)
    return m[1] if m else DEFAULT_BOUNDARY


_SEEK, _HEADERS, _BODY, _END = range(4)


class StreamParser:
    """Incremental parser of the subscription body. `feed` returns the events completed by those bytes.

    An event is complete when the part after its pictures is not a picture (the next event or a heartbeat,
    at most `heartbeat` seconds later), when it has the pictures it can use (two; one per event when a part
    carries several), or at `close`. Parts with a `Content-Length` are read by length, others up to the next
    boundary line; CRLF and bare LF are both accepted, and lines before a boundary (preamble) are skipped."""

    def __init__(self, boundary: str = DEFAULT_BOUNDARY) -> None:
        self._delim = b"--" + boundary.encode("ascii", "replace")
        self._buf = bytearray()
        self._state = _SEEK
        self._skipped = 0  # bytes dropped while looking for a boundary
        self._header_bytes = 0
        self._headers: dict[str, str] = {}
        self._kind = "text"
        self._limit = MAX_TEXT
        self._length: int | None = None
        self._scan = 0  # where the search for the next boundary resumes (parts without a length)
        self._pending: list[dict[str, str]] | None = None  # the last text part's events, collecting pictures
        self._pictures: list[bytes] = []
        self.parts = 0
        self.heartbeats = 0
        self.orphan_pictures = 0  # pictures that followed no event

    def feed(self, data: bytes) -> list[DahuaEvent]:
        out: list[DahuaEvent] = []
        if self._state == _END:
            return out  # after the closing boundary nothing more is read
        self._buf += data
        while self._step(out):
            pass
        return out

    @property
    def ended(self) -> bool:
        """The closing boundary came: the camera will send nothing more on this connection."""
        return self._state == _END

    def close(self) -> list[DahuaEvent]:
        """The stream ended: the event still collecting pictures, with what it has."""
        out: list[DahuaEvent] = []
        self._flush(out)
        return out

    # --- the state machine ---------------------------------------------------------------------------

    def _step(self, out: list[DahuaEvent]) -> bool:
        if self._state == _SEEK:
            return self._seek()
        if self._state == _HEADERS:
            return self._header_line()
        if self._state == _BODY:
            return self._body(out)
        self._buf.clear()
        return False

    def _line(self, budget: int, too_long: str) -> bytes | None:
        """The next line without its ending, or None until one is complete; SourceError(`too_long`) when
        none ends within `budget` bytes."""
        nl = self._buf.find(b"\n", 0, max(0, budget + 1))
        if nl < 0:
            if len(self._buf) > budget:
                raise SourceError(too_long)
            return None
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        return line.rstrip(b"\r")

    def _seek(self) -> bool:
        line = self._line(MAX_HEADERS - self._skipped, f"no multipart boundary in {MAX_HEADERS} bytes")
        if line is None:
            return False
        mark = line.rstrip()
        if mark == self._delim:
            self._state, self._skipped, self._header_bytes, self._headers = _HEADERS, 0, 0, {}
        elif mark == self._delim + b"--":
            self._state = _END
        else:
            self._skipped += len(line) + 1
        return True

    def _header_line(self) -> bool:
        before = len(self._buf)
        line = self._line(MAX_HEADERS - self._header_bytes, f"part header block over {MAX_HEADERS} bytes")
        if line is None:
            return False
        self._header_bytes += before - len(self._buf)
        if line.strip():
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise SourceError(f"malformed part header line {line[:60]!r}")
            self._headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
            return True
        ctype = self._headers.get("content-type", "text/plain").split(";")[0].strip().lower()
        self._kind = "text" if ctype.startswith("text/") else "picture" if ctype.startswith("image/") else "other"
        self._limit = MAX_TEXT if self._kind == "text" else MAX_PICTURE
        length = self._headers.get("content-length")
        self._length = None
        if length is not None:
            if not _LENGTH.match(length):
                raise SourceError(f"bad Content-Length {length[:20]!r}")
            self._length = int(length)
            if self._length > self._limit:
                raise SourceError(f"{self._kind} part of {self._length} bytes (limit {self._limit})")
        self._state, self._scan = _BODY, 0
        return True

    def _body(self, out: list[DahuaEvent]) -> bool:
        if self._length is not None:
            if len(self._buf) < self._length:
                return False
            body = bytes(self._buf[: self._length])
            del self._buf[: self._length]
        else:
            nl = self._boundary_at()
            if nl is None:
                if len(self._buf) > self._limit + len(self._delim) + 2:
                    raise SourceError(f"{self._kind} part without Content-Length over {self._limit} bytes")
                return False
            cut = nl - 1 if nl > 0 and self._buf[nl - 1] == 0x0D else max(nl, 0)
            body = bytes(self._buf[:cut])
            del self._buf[: nl + 1]  # the boundary line stays for _seek
            if len(body) > self._limit:
                raise SourceError(f"{self._kind} part without Content-Length over {self._limit} bytes")
        self._state = _SEEK
        self._part(body, out)
        return True

    def _boundary_at(self) -> int | None:
        """The newline before the boundary line that ends a part without a length (-1: the body is empty
        and the boundary comes at once), or None until it came."""
        if self._scan == 0 and self._buf.startswith(self._delim):
            return -1
        marker = b"\n" + self._delim
        while True:
            i = self._buf.find(marker, self._scan)
            if i < 0:
                self._scan = max(0, len(self._buf) - len(marker) + 1)
                return None
            after = i + len(marker)
            if after >= len(self._buf):
                self._scan = i  # the byte after it decides; wait for it
                return None
            if self._buf[after] in b"\r\n \t-":
                return i
            self._scan = i + 1  # only the start of a longer word inside the body

    # --- parts to events ------------------------------------------------------------------------------

    def _part(self, body: bytes, out: list[DahuaEvent]) -> None:
        self.parts += 1
        if self._kind == "picture":
            if self._pending is None:
                self.orphan_pictures += 1
                return
            self._pictures.append(body)
            if len(self._pictures) >= max(2, len(self._pending)):
                self._flush(out)
            return
        if self._kind != "text":
            return  # other attachments are not ours to keep
        self._flush(out)
        text = body.decode("utf-8", "replace")
        if text.strip().lower() == "heartbeat":
            self.heartbeats += 1
            return
        events = parse_fields(text)
        if events:
            self._pending, self._pictures = events, []

    def _flush(self, out: list[DahuaEvent]) -> None:
        if self._pending is None:
            return
        events, pictures = self._pending, self._pictures
        self._pending, self._pictures = None, []
        # Several events with one picture each: each its own; otherwise every event shares the part's pictures.
        own = len(events) > 1 and len(pictures) == len(events)
        for i, fields in enumerate(events):
            out.append(DahuaEvent(fields, (pictures[i],) if own else tuple(pictures)))


# --- one event to reads -------------------------------------------------------------------------------


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _confidence(value: str | None) -> float | None:
    """0..1 from a 0-1 or 0-100 score (above 1 is read as percent); None when absent or not a number."""
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    if x != x:
        return None
    if x > 1:
        x /= 100.0
    return min(1.0, max(0.0, x))


def _event_time(fields: Mapping[str, str], received_at: datetime) -> tuple[datetime, str]:
    """The event's time and the stamp it came from ("" when none was usable, then `received_at`).
    RealUTC first (some firmware puts local time in UTC), then UTC plus UTCMS milliseconds, then a UTCMS
    holding epoch milliseconds. A stamp before 2000 or over a day ahead is a clock never set: not used."""
    seconds: float | None = None
    stamp = ""
    ms = fields.get("UTCMS", "")
    for key in ("RealUTC", "UTC"):
        value = fields.get(key, "")
        if _STAMP.match(value):
            seconds, stamp = float(value), f"{key}={value}"
            if key == "UTC" and _STAMP.match(ms) and float(ms) < 1000:
                seconds += float(ms) / 1000.0
                stamp += f".{ms}"
            break
    if seconds is None and _STAMP.match(ms) and float(ms) >= 1e11:
        seconds, stamp = float(ms) / 1000.0, f"UTCMS={ms}"
    if seconds is None:
        return received_at, ""
    try:
        at = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return received_at, ""
    if not _EARLIEST <= at <= received_at + timedelta(days=1):
        return received_at, ""
    return at, stamp


def event_reads(event: DahuaEvent, received_at: datetime) -> list[OutsideRead]:
    """A TrafficJunction event as a read (other codes give none). Camera id `<channel>/<lane>` when the
    event names a lane, else `<channel>`; plate A-Z0-9 (None for "Unknown", "无牌" and the like);
    confidence 0..1 (0.5 when the camera gives none); the larger of the first two JPEGs is the scene,
    the smaller the plate cut-out. The message id depends only on what the camera sent (group, time,
    channel, lane, plate), so the same event sent again after a reconnect is stored once."""
    f = event.fields
    if f.get("Code", "").strip().lower() != "trafficjunction":
        return []
    channel = (f.get("Channel") or f.get("Index") or "0").strip()
    if not _NUMBER.match(channel):
        raise SourceError(f"event channel {channel[:20]!r} is not a number")
    lane = (f.get("Lane") or f.get("TrafficCar.Lane") or "").strip()
    camera = f"{channel}/{lane}" if _NUMBER.match(lane) else channel  # an unusable lane: the channel's mapping
    raw = (f.get("TrafficCar.PlateNumber") or f.get("Object.Text") or "").strip()
    plate = normalise(raw)
    score = _confidence(f.get("TrafficCar.Confidence") or f.get("Object.Confidence"))
    confidence = 0.0 if plate is None else UNKNOWN_CONFIDENCE if score is None else score
    at, stamp = _event_time(f, received_at)
    jpegs = [p for p in event.pictures if p.startswith(JPEG)][:2]
    image = crop = None
    if jpegs:
        image = jpegs[0]
        if len(jpegs) == 2:
            image, crop = (jpegs[0], jpegs[1]) if len(jpegs[1]) < len(jpegs[0]) else (jpegs[1], jpegs[0])
    group = f.get("GroupID", "").strip()[:32]
    basis: tuple[object, ...] = ("dahua", group, stamp, channel, lane, plate or raw[:32])
    if not group and not stamp:
        # Nothing from the camera identifies the event: its picture does, else it is unique to this moment.
        basis += (hashlib.sha256(image).hexdigest() if image else received_at.isoformat(),)
    color = f.get("TrafficCar.PlateColor", "").strip()
    raw_text = (raw[:48] + (f" ({color[:12]})" if color else ""))[:64]
    return [OutsideRead(camera_id=camera, plate=plate, confidence=confidence, at=at, message_id=_digest(*basis),
                        raw_text=raw_text, image=image, crop=crop)]


def mapped_camera(read: OutsideRead, ids: Iterable[str]) -> str | None:
    """The source camera id a read is mapped by: `<channel>/<lane>` if listed, else `<channel>`. None when
    neither is: checked before `service.sources.bay_for`, whose last guess (the part after the slash) would
    take a lane number for a channel."""
    known = set(ids)
    channel = read.camera_id.partition("/")[0]
    return next((c for c in (read.camera_id, channel) if c in known), None)


def text_reads(body: bytes, received_at: datetime) -> list[OutsideRead]:
    """The reads in one event text part (`Events[0].Code=TrafficJunction` ... lines), without pictures:
    what the dashboard's "test event" decodes for a dahua source."""
    if len(body) > MAX_TEXT:
        raise SourceError(f"event text larger than {MAX_TEXT} bytes")
    events = parse_fields(body.decode("utf-8", "replace"))
    return [r for fields in events for r in event_reads(DahuaEvent(fields), received_at)]
