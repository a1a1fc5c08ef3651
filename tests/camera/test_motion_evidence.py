"""Motion gate on frames of the fixture clip, and evidence files on disk."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from anpr.evidence import purge_older_than, save_evidence
from anpr.motion import MotionGate, MotionOptions

from .helpers import CLIP, CLIP_BAY


def clip_frames(step: int = 3) -> list[tuple[float, np.ndarray]]:
    """(time in s, frame) every `step` frames of the fixture clip (15 fps)."""
    cap = cv2.VideoCapture(str(CLIP))
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append((i / 15, frame))
        i += 1
    cap.release()
    return out


def test_motion_gate_skips_a_parked_car() -> None:
    frames = clip_frames()
    assert frames, f"cannot read {CLIP}"
    opts = MotionOptions(settle_s=2.0, check_interval_s=5.0)
    gate = MotionGate([("B1", CLIP_BAY), ("far", [(0, 0), (100, 0), (100, 100), (0, 100)])], opts)
    due_at = {"B1": [], "far": []}
    for t, frame in frames:
        for bay in gate.due(frame, t):
            due_at[bay].append(t)
    arriving = [t for t in due_at["B1"] if 3 < t <= 7]
    parked = [t for t in due_at["B1"] if 7.5 < t < 13]
    # Every frame while the car moves in (and settles), then only the periodic check.
    assert len(arriving) >= 18
    assert 1 <= len(parked) <= 2
    # The still corner of the frame costs one look per check interval.
    assert len(due_at["far"]) <= 22 / opts.check_interval_s + 1
    # Looked at while the car drives off.
    assert any(13 <= t <= 15 for t in due_at["B1"])


def test_save_evidence_atomic_relative_paths(tmp_path: Path) -> None:
    frame = np.full((120, 200, 3), 80, np.uint8)
    at = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)
    ev = save_evidence(tmp_path, "cam1", "abc123", frame, (50, 40, 150, 70), at)
    assert ev.frame_path == "cam1/2026-11-02/abc123-frame.jpg"
    assert ev.crop_path == "cam1/2026-11-02/abc123-crop.jpg"
    crop = cv2.imread(str(tmp_path / ev.crop_path))
    assert crop is not None and crop.shape[1] == 130  # 100 px box + 15 % margin each side
    assert not [p for p in (tmp_path / "cam1/2026-11-02").iterdir() if p.name.startswith(".tmp")]
    no_box = save_evidence(tmp_path, "cam1", "def456", frame, None, at)
    assert no_box.crop_path is None and (tmp_path / no_box.frame_path).is_file()
    with pytest.raises(ValueError):
        save_evidence(tmp_path, "../etc", "x", frame, None, at)


def test_purge_older_than(tmp_path: Path) -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    frame = np.zeros((16, 16, 3), np.uint8)
    for days in (0, 29, 30, 31, 90):
        save_evidence(tmp_path, "cam1", f"e{days}", frame, None, now - timedelta(days=days))
    save_evidence(tmp_path, "old-cam", "x", frame, None, now - timedelta(days=60))
    (tmp_path / "cam1" / "notes").mkdir()  # not a day folder: left alone
    old = tmp_path / "cam1" / (now - timedelta(days=29)).date().isoformat()
    os.utime(next(old.iterdir()), (0, 0))  # file times do not matter, folder names do
    assert purge_older_than(tmp_path, 30, now) == 3
    left = sorted(p.name for p in (tmp_path / "cam1").iterdir())
    assert left == ["2026-10-31", "2026-11-01", "2026-11-30", "notes"]
    assert not (tmp_path / "old-cam").exists()
    assert purge_older_than(tmp_path / "missing", 30, now) == 0
