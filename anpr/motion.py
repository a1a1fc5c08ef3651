"""Cheap per-bay motion gate: decides which bays are worth running the recogniser on.

A parked car is most of a bay's life. Plate detection + OCR costs hundreds of milliseconds per
frame; a grey-level difference of a 320-pixel-wide copy inside each bay polygon costs well under one.
So a bay is looked at on every processed frame only while something moves in it (and for
`settle_s` afterwards, to collect the agreeing reads of a car that just stopped), and otherwise
once every `check_interval_s` to confirm the car (or the empty bay) is still there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

Polygon = Sequence[tuple[float, float]]


@dataclass(frozen=True)
class MotionOptions:
    width: int = 320  # the difference is taken on a copy this wide
    pixel_threshold: int = 16  # grey-level change (0-255) that counts as a moving pixel
    min_changed_fraction: float = 0.004  # share of the bay's pixels that must move
    settle_s: float = 4.0  # keep looking every frame this long after the motion stops
    check_interval_s: float = 10.0  # a still bay is still looked at this often


@dataclass
class _Bay:
    bay_id: str
    polygon: Polygon
    mask: np.ndarray | None = None  # in small-frame pixels, cropped to `rect`
    rect: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, w, h in small-frame pixels
    area: int = 0
    last_motion: float = float("-inf")
    last_check: float = float("-inf")
    changed: float = 0.0


class MotionGate:
    """`due(image, now)` -> the bay ids to recognise on this frame. `now` is monotonic seconds."""

    def __init__(self, zones: Sequence[tuple[str, Polygon]], options: MotionOptions | None = None) -> None:
        self.opts = options or MotionOptions()
        self._bays = [_Bay(bay_id, list(poly)) for bay_id, poly in zones]
        self._prev: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._scale = 1.0

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self._shape != (h, w):  # first frame, or the camera changed resolution
            self._shape = (h, w)
            self._scale = min(1.0, self.opts.width / w)
            self._prev = None
            small = (max(1, round(h * self._scale)), max(1, round(w * self._scale)))
            for bay in self._bays:
                full = np.zeros(small, np.uint8)
                pts = np.round(np.asarray(bay.polygon, np.float64) * self._scale).astype(np.int32)
                cv2.fillPoly(full, [pts], 255)
                x, y, bw, bh = cv2.boundingRect(pts)
                x, y = max(0, x), max(0, y)
                bay.rect = (x, y, bw, bh)
                bay.mask = full[y : y + bh, x : x + bw]
                bay.area = int(cv2.countNonZero(bay.mask)) if bay.mask.size else 0
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if self._scale < 1.0:
            grey = cv2.resize(grey, None, fx=self._scale, fy=self._scale, interpolation=cv2.INTER_AREA)
        # Blur so H.264 block noise and sensor grain do not count as motion.
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def due(self, image: np.ndarray, now: float) -> list[str]:
        grey = self._prepare(image)
        prev, self._prev = self._prev, grey
        out = []
        for bay in self._bays:
            moving = False
            if prev is not None and bay.area and bay.mask is not None:
                x, y, w, h = bay.rect
                diff = cv2.absdiff(grey[y : y + h, x : x + w], prev[y : y + h, x : x + w])
                _, moved = cv2.threshold(diff, self.opts.pixel_threshold, 255, cv2.THRESH_BINARY)
                bay.changed = cv2.countNonZero(cv2.bitwise_and(moved, bay.mask)) / bay.area
                moving = bay.changed >= self.opts.min_changed_fraction
            if moving:
                bay.last_motion = now
            if (
                moving
                or now - bay.last_motion < self.opts.settle_s
                or now - bay.last_check >= self.opts.check_interval_s
            ):
                bay.last_check = now
                out.append(bay.bay_id)
        return out

    def changed_fractions(self) -> dict[str, float]:
        """Share of each bay's pixels that moved on the last frame (for status and tuning)."""
        return {bay.bay_id: round(bay.changed, 4) for bay in self._bays}

    def polygon(self, bay_id: str) -> Polygon:
        return next(b.polygon for b in self._bays if b.bay_id == bay_id)
