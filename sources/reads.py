"""What every outside format is reduced to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class SourceError(ValueError):
    """A request the source's format does not allow: the reason is shown to the operator (Sources page)."""


@dataclass(frozen=True)
class OutsideRead:
    camera_id: str  # as the source names it; mapped to a bay by the source's settings
    plate: str | None  # normalised A-Z0-9, None when the source saw a car but no plate
    confidence: float  # 0..1, the source's own score
    at: datetime  # aware, UTC
    message_id: str  # the source's id for this read (idempotency); derived from the content when absent
    raw_text: str = ""
    image: bytes | None = None  # the scene picture the source sent, if any (JPEG)
    crop: bytes | None = None  # the plate picture, if the source sends one apart
    left: bool = False  # an explicit "vehicle left" message (only some sources have one)
