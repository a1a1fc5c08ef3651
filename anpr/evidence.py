"""Evidence images: the full frame and the plate crop behind an arrival, kept for `evidence_days`.

Layout: `<evidence_dir>/<camera>/<YYYY-MM-DD>/<id>-frame.jpg` and `<id>-crop.jpg` (UTC date), so
retention is "delete whole day folders" and a person can browse it. Paths in events are relative
to the evidence dir, so the dir can move. Writes are atomic (temporary file + rename in the same
folder): a reader never sees half a JPEG, even if the worker is killed mid-write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Collection
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from models.events import Evidence

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jpg", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def crop_box(
    image: np.ndarray, box: tuple[float, float, float, float], margin: float = 0.15
) -> np.ndarray | None:
    """The box plus a margin (a little context helps a person check the read), clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    a, b = max(0, int(x1 - mx)), max(0, int(y1 - my))
    c, d = min(w, round(x2 + mx)), min(h, round(y2 + my))
    if c <= a or d <= b:
        return None
    return image[b:d, a:c]


def save_evidence(
    evidence_dir: Path,
    camera: str,
    evidence_id: str,
    frame: np.ndarray,
    box: tuple[float, float, float, float] | None,
    at: datetime,
    quality: int = 90,
) -> Evidence:
    """Write the frame (and the crop when a box is given); return their paths relative to the dir."""
    if not _SAFE.match(camera) or not _SAFE.match(evidence_id):
        raise ValueError("camera and evidence id must be plain names (A-Z a-z 0-9 _ . -)")
    day = at.astimezone(UTC).date().isoformat()
    rel_dir = Path(camera) / day
    folder = Path(evidence_dir) / rel_dir
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    ok, buf = cv2.imencode(".jpg", frame, params)
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    frame_rel = rel_dir / f"{evidence_id}-frame.jpg"
    _write_atomic(Path(evidence_dir) / frame_rel, buf.tobytes())
    crop_rel = None
    crop = crop_box(frame, box) if box is not None else None
    if crop is not None and crop.size:
        ok, buf = cv2.imencode(".jpg", crop, params)
        if ok:
            crop_rel = rel_dir / f"{evidence_id}-crop.jpg"
            _write_atomic(Path(evidence_dir) / crop_rel, buf.tobytes())
    return Evidence(frame_path=frame_rel.as_posix(), crop_path=crop_rel.as_posix() if crop_rel else None)


def purge_older_than(evidence_dir: Path, days: int, now: datetime, keep: Collection[str] = ()) -> int:
    """Delete day folders older than `days` (by folder name, UTC); return how many were removed.

    Folder names, not file times, decide: copying or restoring a backup must not reset retention.
    Left-over temporary files from a killed writer are removed with their day. `keep` names files
    (relative paths as events store them) that must stay, e.g. the evidence of a penalty still open:
    their day folder loses every other file and stays with them (it is not counted as removed).
    """
    root = Path(evidence_dir)
    if not root.is_dir():
        return 0
    cutoff: date = (now.astimezone(UTC) - timedelta(days=days)).date()
    held: dict[tuple[str, str], set[str]] = {}
    for rel in keep:
        parts = Path(rel).parts
        if len(parts) == 3:
            held.setdefault((parts[0], parts[1]), set()).add(parts[2])
    removed = 0
    for cam in root.iterdir():
        if not cam.is_dir() or cam.is_symlink():
            continue
        for day_dir in cam.iterdir():
            if not (day_dir.is_dir() and _DAY.match(day_dir.name)) or day_dir.is_symlink():
                continue
            try:
                day = date.fromisoformat(day_dir.name)
            except ValueError:
                continue
            if day >= cutoff:
                continue
            names = held.get((cam.name, day_dir.name))
            if not names:
                shutil.rmtree(day_dir, ignore_errors=True)
                removed += 1
                continue
            for entry in day_dir.iterdir():
                if entry.name in names and entry.is_file() and not entry.is_symlink():
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            cam.rmdir()  # only succeeds when the camera has no days left
    if removed:
        log.info("evidence: removed %d day folder(s) older than %s", removed, cutoff.isoformat())
    return removed
