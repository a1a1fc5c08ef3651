"""Interfaces between the camera pieces: what a recogniser returns for one frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PlateCandidate:
    """One plate found in one frame."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    det_confidence: float
    text: str | None  # normalised A-Z0-9, None when unreadable
    confidence: float  # OCR confidence of the whole text, 0..1
    char_confidences: tuple[float, ...] = field(default_factory=tuple)
    format_name: str | None = None  # the country format it matched, if any
    raw_text: str = ""
    plate_confidence: float | None = None  # see anpr.plates.PlateRead; None: `confidence`


class Recognizer(Protocol):
    """Finds and reads the plates in a BGR frame."""

    def recognize(self, image: np.ndarray) -> list[PlateCandidate]: ...
