"""How times and durations read to a driver: in the site's time zone, as people write them.

Notices used to show `2026-12-06T00:27:40.010136+00:00` and "1 minutes"; these helpers give
"6 Dec 2026, 00:27:40 CET", "1 minute" and "in less than a minute". Pure functions, no I/O.
"""

from __future__ import annotations

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
