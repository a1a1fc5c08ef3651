"""Parsers: one request body of a source's format -> `OutsideRead`s. Each raises `SourceError` with a reason
an operator can act on; none trusts the sender (sizes, types, XML entities)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from models import strictjson
from sources.reads import OutsideRead, SourceError

MAX_READS = 100  # per request
UNKNOWN_CONFIDENCE = 0.5  # a source that gives no score: below every review threshold
NO_PLATE = {"", "UNKNOWN", "NOPLATE", "NONE", "NULL"}


def normalise(text: object) -> str | None:
    """A-Z0-9 only, at most 16; None when nothing plate-like is left (or the source says "unknown")."""
    if not isinstance(text, str):
        return None
    plate = re.sub(r"[^A-Z0-9]", "", text.upper())[:16]
    return None if plate in NO_PLATE else plate


def _time(value: object, fallback: datetime) -> datetime:
    if value is None or value == "":
        return fallback
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 < value < 1e11:
            raise SourceError(f"time {value!r} is not a plausible unix time")
        return datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, str) or len(value) > 40:
        raise SourceError("time must be an ISO 8601 string or unix seconds")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"time {value[:40]!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise SourceError(f"time {value[:40]!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _score(value: object, scale: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        x = float(value) / scale
    except ValueError:
        return 0.0
    return min(1.0, max(0.0, x)) if x == x else 0.0


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _json(body: bytes) -> Any:
    try:
        return strictjson.loads(body)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise SourceError(f"body is not JSON we can store ({str(exc)[:80]})") from None


# --- our own signed JSON ------------------------------------------------------------------------


def webhook_reads(body: bytes, received_at: datetime) -> list[OutsideRead]:
    """`{"id", "camera", "plate", "confidence", "at", "event": "read"|"left"}` or `{"reads": [those]}`."""
    data = _json(body)
    items = data.get("reads") if isinstance(data, dict) and "reads" in data else [data]
    if not isinstance(items, list) or not items:
        raise SourceError("expected a read object or {\"reads\": [...]}")
    if len(items) > MAX_READS:
        raise SourceError(f"at most {MAX_READS} reads per request")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SourceError(f"reads[{i}]: not an object")
        mid, cam = item.get("id"), item.get("camera")
        if not isinstance(mid, str) or not 0 < len(mid) <= 128:
            raise SourceError(f"reads[{i}].id: a string of 1-128 characters is required")
        if not isinstance(cam, str) or not 0 < len(cam) <= 128:
            raise SourceError(f"reads[{i}].camera: a string of 1-128 characters is required")
        event = item.get("event", "read")
        if event not in ("read", "left"):
            raise SourceError(f"reads[{i}].event: read or left")
        out.append(OutsideRead(camera_id=cam, plate=normalise(item.get("plate")), raw_text=str(item.get("plate"))[:64],
                               confidence=_score(item.get("confidence", 0)), at=_time(item.get("at"), received_at),
                               message_id=mid, left=event == "left"))
    return out


# --- Plate Recognizer (Snapshot and Stream webhooks) ------------------------------------------------


def platerecognizer_reads(data: Any, received_at: datetime, image: bytes | None = None) -> list[OutsideRead]:
    """Its webhook JSON: `{"hook": {...}, "data": {"camera_id", "timestamp", "results": [{"plate",
    "score", "dscore", "region": {"code", "score"}}]}}` (the multipart form carries it in a `json` field
    and the picture in `upload`). Each result is a read; the plate text comes lower-case."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise SourceError("expected Plate Recognizer's webhook JSON with a \"data\" object")
    d = data["data"]
    cam = d.get("camera_id") or (data.get("hook") or {}).get("target") or "default"
    if not isinstance(cam, str) or len(cam) > 128:
        raise SourceError("data.camera_id: a string of at most 128 characters")
    at = _time(d.get("timestamp"), received_at)
    results = d.get("results")
    if not isinstance(results, list):
        raise SourceError("data.results: a list is required")
    if len(results) > MAX_READS:
        raise SourceError(f"at most {MAX_READS} results per request")
    out = []
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise SourceError(f"data.results[{i}]: not an object")
        plate = normalise(r.get("plate"))
        region = r.get("region") if isinstance(r.get("region"), dict) else {}
        raw = f"{r.get('plate', '')}"[:32] + (f" ({region.get('code')})" if region.get("code") else "")
        out.append(OutsideRead(camera_id=cam, plate=plate, raw_text=raw, confidence=_score(r.get("score", 0)), at=at,
                               message_id=_digest("pr", cam, at.isoformat(), plate, i), image=image))
    return out


# --- Hikvision ISAPI ANPR event push ----------------------------------------------------------------

_HIK_NS = re.compile(r"^\{[^}]*\}")


def _children(el: Any) -> dict[str, Any]:
    return {_HIK_NS.sub("", c.tag): c for c in el}


def hikvision_reads(xml: bytes, received_at: datetime, images: Iterable[tuple[str, bytes]] = ()) -> list[OutsideRead]:
    """`EventNotificationAlert` XML (namespace ver20/ver10 or none) with `eventType` ANPR: `ipAddress`,
    `channelID`, `dateTime` and `ANPR/licensePlate`, `ANPR/confidenceLevel` (0-100). Other event types
    (heartbeats, video loss) give no read. The camera id is tried as `ip/channel`, then ip, then channel
    by the caller (`camera_ids`). `licensePlatePicture` is kept as the plate crop, the detection (scene)
    picture as the frame."""
    if len(xml) > 256 * 1024:
        raise SourceError("event XML larger than 256 KiB")
    try:
        root = SafeET.fromstring(xml)
    except DefusedXmlException:
        raise SourceError("XML with entities or a DTD is refused") from None
    except SafeET.ParseError as exc:
        raise SourceError(f"not well-formed XML: {exc}") from None
    if _HIK_NS.sub("", root.tag) != "EventNotificationAlert":
        raise SourceError("expected an EventNotificationAlert document")
    top = _children(root)
    etype = (top["eventType"].text or "").strip() if "eventType" in top else ""
    if etype.upper() != "ANPR":
        return []
    anpr = _children(top["ANPR"]) if "ANPR" in top else {}
    plate_el = anpr.get("licensePlate")
    raw = (plate_el.text or "").strip()[:64] if plate_el is not None else ""
    conf_el = anpr.get("confidenceLevel")
    ip = (top["ipAddress"].text or "").strip() if "ipAddress" in top else ""
    channel = (top["channelID"].text or "").strip() if "channelID" in top else ""
    when = (top["dateTime"].text or "").strip() if "dateTime" in top else None
    at = _time(when, received_at)
    pictures = list(images)
    crop = next((b for n, b in pictures if "plate" in n.lower()), None)
    image = next((b for n, b in pictures if "plate" not in n.lower()), None)
    return [OutsideRead(camera_id=f"{ip}/{channel}", plate=normalise(raw), raw_text=raw,
                        confidence=_score(conf_el.text if conf_el is not None else 0, 100.0), at=at,
                        message_id=_digest("hik", ip, channel, at.isoformat(), raw), image=image, crop=crop)]


def camera_ids(read: OutsideRead) -> list[str]:
    """The ids a source's settings may name this read's camera by (Hikvision: `ip/channel`, ip, channel)."""
    if "/" in read.camera_id:
        ip, _, channel = read.camera_id.partition("/")
        return [read.camera_id, ip, channel]
    return [read.camera_id]


# --- FTP uploads: the plate (and time, camera) in the file name -------------------------------------


def filename_read(name: str, data: bytes, pattern: str, time_format: str, utc_offset_min: int,
                  default_camera: str, received_at: datetime) -> OutsideRead:
    """One uploaded picture; its name must match the source's `file_pattern` (groups plate, time, camera)."""
    from datetime import timedelta

    base = name.rsplit("/", 1)[-1]
    m = re.fullmatch(pattern, base)
    if m is None:
        raise SourceError(f"file name {base[:120]!r} does not match the source's file_pattern")
    groups = m.groupdict()
    at = received_at
    if groups.get("time"):
        try:
            local = datetime.strptime(groups["time"], time_format)
        except ValueError:
            raise SourceError(f"time {groups['time']!r} does not match time_format {time_format!r}") from None
        at = (local - timedelta(minutes=utc_offset_min)).replace(tzinfo=UTC)
    if not data.startswith(b"\xff\xd8"):
        raise SourceError("the uploaded file is not a JPEG picture")
    camera = groups.get("camera") or default_camera
    plate = normalise(groups.get("plate"))
    # A name rarely carries the camera's score: unknown is 0.5, below any review threshold, so what such a
    # camera reads never fines anyone without an operator looking at the picture.
    score = groups.get("confidence")
    confidence = (_score(score, 100.0 if float(score) > 1 else 1.0) if score and score.replace(".", "", 1).isdigit()
                  else UNKNOWN_CONFIDENCE)
    return OutsideRead(camera_id=camera, plate=plate, raw_text=str(groups.get("plate"))[:64],
                       confidence=confidence if plate else 0.0, at=at,
                       message_id=_digest("ftp", base, len(data), hashlib.sha256(data).hexdigest()), image=data)


# --- Frigate over MQTT -------------------------------------------------------------------------------

FRIGATE_VEHICLES = {"car", "motorcycle", "bus", "truck", "van", "license_plate"}


def frigate_reads(topic: str, payload: bytes, prefix: str, received_at: datetime) -> list[OutsideRead]:
    """`<prefix>/events` (`{"type": new|update|end, "after": {"id", "camera", "label", "current_zones",
    "recognized_license_plate", "recognized_license_plate_score", "frame_time", "end_time"}}`) and
    `<prefix>/tracked_object_update` (`{"type": "lpr", "id", "camera", "plate", "score", "timestamp"}`).
    The camera id is `camera/zone` for the first zone the object is in, else the camera. An event's
    `end` is an explicit "left" for its plate; events without a recognised plate give no read."""
    if len(payload) > 64 * 1024:
        raise SourceError("MQTT message larger than 64 KiB")
    data = _json(payload)
    if not isinstance(data, dict):
        raise SourceError("MQTT payload is not a JSON object")
    if topic == f"{prefix}/tracked_object_update":
        if data.get("type") != "lpr":
            return []
        cam, oid = data.get("camera"), data.get("id")
        if not isinstance(cam, str) or not isinstance(oid, str):
            raise SourceError("lpr update without camera or id")
        plate = normalise(data.get("plate"))
        if plate is None:
            return []
        at = _time(data.get("timestamp"), received_at)
        return [OutsideRead(camera_id=cam[:128], plate=plate, raw_text=str(data.get("plate"))[:64],
                            confidence=_score(data.get("score", 0)), at=at, message_id=f"{oid}:{plate}"[:100])]
    if topic != f"{prefix}/events":
        return []
    after = data.get("after")
    if not isinstance(after, dict) or after.get("label") not in FRIGATE_VEHICLES:
        return []
    raw = after.get("recognized_license_plate")
    if raw is None and isinstance(after.get("sub_label"), list) and after["sub_label"]:
        raw = after["sub_label"][0]  # older releases put a recognised plate in the sub label
    plate = normalise(raw)
    cam, oid = after.get("camera"), after.get("id")
    if plate is None or not isinstance(cam, str) or not isinstance(oid, str):
        return []
    zones = [z for z in after.get("current_zones") or after.get("entered_zones") or [] if isinstance(z, str)]
    camera_id = f"{cam}/{zones[0]}" if zones else cam
    ended = data.get("type") == "end"
    at = _time(after.get("end_time") if ended else after.get("frame_time"), received_at)
    score = after.get("recognized_license_plate_score")
    if score is None and isinstance(after.get("sub_label"), list) and len(after["sub_label"]) > 1:
        score = after["sub_label"][1]
    return [OutsideRead(camera_id=camera_id[:128], plate=plate, raw_text=str(raw)[:64], confidence=_score(score or 0),
                        at=at, left=ended,
                        # updates repeat every few seconds: at most one read per object, plate and minute
                        message_id=f"{oid}:{plate}:{'end' if ended else int(at.timestamp() // 60)}"[:100])]
