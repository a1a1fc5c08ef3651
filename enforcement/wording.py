"""How times and durations read to a driver: in the site's time zone, as people write them.

Notices used to show `2026-12-06T00:27:40.010136+00:00` and "1 minutes"; these helpers give
"6 Dec 2026, 00:27:40 CET", "1 minute" and "in less than a minute". Pure functions, no I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None) -> ZoneInfo:
    """The site's zone; UTC for a missing or unknown name (the settings validate it already)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(at: datetime | str | None, tz: ZoneInfo, seconds: bool = True) -> str:
    """`at` in the site's zone: "6 Dec 2026, 00:27:40 CET" (seconds where money depends on them)."""
    if at is None or at == "":
        return ""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(tz)
    clock = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    return f"{local.day} {local.strftime('%b %Y')}, {clock} {local.strftime('%Z')}".rstrip()


def minutes_text(n: int) -> str:
    """"1 minute", "15 minutes"."""
    return f"{n} minute" if n == 1 else f"{n} minutes"


def time_left(until: datetime, now: datetime) -> str:
    """"in 14 minutes" counted down in whole minutes (never more than is left), "in less than a minute",
    or "now" once `until` has passed: the same instant the notice prints as the fee's start."""
    left = (until - now).total_seconds()
    if left <= 0:
        return "now"
    if left < 60:
        return "in less than a minute"
    return f"in {minutes_text(int(left // 60))}"


# What the driver page calls each visit timeline entry (`enforcement.decide` writes the keys).
EVENT_WORDS: dict[str, str] = {
    "arrived": "car arrived",
    "plate_corrected": "plate read corrected",
    "exempt": "exempt from fees",
    "blacklisted": "vehicle on the block list",
    "linked": "charging session started",
    "charging": "charging",
    "suspended": "charging paused by the station",
    "idle": "charging finished",
    "warning": "driver warned",
    "violation": "fee started",
    "idle_fee_resumed": "idle fee resumed",
    "idle_end": "idle fee stopped",
    "idle_ended": "idle fee stopped",
    "overstay_ended": "overstay fee stopped",
    "unplugged": "cable unplugged",
    "transaction_ended": "charging session ended",
    "left_plugged": "car left with the cable still reported in",
    "departed": "car left",
    "camera_down": "camera out of service",
    "camera_up": "camera back in service",
    "presence_resumed": "car seen again",
    "seen_after_outage": "car seen again",
}
# OCPP status and stop-reason words, as a driver would say them.
OCPP_WORDS: dict[str, str] = {
    "SuspendedEVSE": "paused by the charging station",
    "SuspendedEV": "the car stopped taking power",
    "EVDisconnected": "cable unplugged",
    "EVConnected": "cable plugged in",
    "SuspendedByEV": "the car stopped taking power",
    "StoppedByEV": "stopped by the car",
    "EmergencyStop": "emergency stop",
    "DeAuthorized": "charging authorisation withdrawn",
    "PowerLoss": "power cut at the station",
    "Remote": "stopped remotely",
    "Local": "stopped at the charging station",
    "Finishing": "finishing",
    "Charging": "charging",
    "Idle": "charging finished",
}


def timeline_line(what: str, detail: str = "") -> str:
    """One timeline entry in plain words: "charging finished (the car stopped taking power)"; a detail
    that only repeats the entry's name ("departed: departed") is left out."""
    label = EVENT_WORDS.get(what, what.replace("_", " "))
    words = detail.strip()
    for ocpp, plain in sorted(OCPP_WORDS.items(), key=lambda kv: -len(kv[0])):
        words = _replace_word(words, ocpp, plain)
    if not words or words.lower() in (what.replace("_", " ").lower(), label.lower()):
        return label
    return f"{label} ({words})"


def _replace_word(text: str, word: str, plain: str) -> str:
    return re.sub(rf"\b{re.escape(word)}\b", plain, text)
