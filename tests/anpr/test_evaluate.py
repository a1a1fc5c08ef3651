"""The evaluation command on real slices of plates-dev."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anpr.detector import DETECTOR_PATH_ENV
from anpr.evaluate import SUMMARY_KEYS, EvalReport, evaluate, load_labels, match, write_report
from anpr.ocr import RapidOcrBackend
from anpr.recognizer import PlateRecognizer
from anpr.train import DEFAULT_ONNX
from anpr.types import PlateCandidate
from tests.conftest import DATASETS

DEV = DATASETS / "plates-dev"
MODEL = Path(os.environ.get(DETECTOR_PATH_ENV, DEFAULT_ONNX))
REPO = Path(__file__).resolve().parents[2]


class FixedAnswers:
    """Returns, for each image in turn, prepared candidates: the input of the metric under test."""

    def __init__(self, answers: list[list[PlateCandidate]]) -> None:
        self.answers = iter(answers)

    def recognize(self, image: np.ndarray) -> list[PlateCandidate]:
        return next(self.answers)


def cand(box, text) -> PlateCandidate:
    return PlateCandidate(box=tuple(box), det_confidence=0.9, text=text, confidence=0.9)


def test_metrics_arithmetic_on_real_labels() -> None:
    rows = load_labels(DEV)[:4]
    boxes = [r["plates"][0]["box"] for r in rows]
    texts = [r["plates"][0]["text"] for r in rows]
    shifted = [boxes[2][0] + 1000, boxes[2][1], boxes[2][2] + 1000, boxes[2][3]]
    answers = [
        [cand(boxes[0], texts[0])],  # right
        [cand(boxes[1], texts[1][:-1] + ("0" if texts[1][-1] != "0" else "1"))],  # one char wrong
        [cand(shifted, texts[2])],  # right text, wrong place: a miss and a false positive
        [],  # nothing found
    ]
    report = evaluate(DEV, FixedAnswers(answers), limit=4, warmup=False)
    assert report.images == 4 and report.plates == 4 and report.predictions == 3
    assert report.detection_recall == pytest.approx(2 / 4)
    assert report.detection_precision == pytest.approx(2 / 3)
    assert report.exact_plate_accuracy == pytest.approx(1 / 4)
    assert report.char_accuracy == pytest.approx((1 + (1 - 1 / len(texts[1]))) / 4)
    assert [r.detected for r in report.results] == [True, True, False, False]


@pytest.mark.parametrize(
    ("labels", "preds", "expected"),
    [
        ([(0, 0, 10, 10)], [(0, 0, 10, 10)], {0: 0}),
        ([(0, 0, 10, 10)], [(5, 0, 15, 10)], {}),  # IoU 1/3
        ([(0, 0, 10, 10), (20, 0, 30, 10)], [(21, 0, 30, 10), (0, 0, 9, 10)], {0: 1, 1: 0}),
        ([(0, 0, 10, 10)], [(0, 0, 10, 9), (0, 0, 10, 10)], {0: 1}),  # one candidate per plate, best first
    ],
)
def test_match(labels, preds, expected) -> None:
    got = match(labels, [cand(p, "X") for p in preds])
    assert {g: p for g, (p, _) in got.items()} == expected


def _subset(tmp_path: Path, names: list[str]) -> Path:
    """A labels.jsonl over some plates-dev images (absolute paths, nothing copied)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = [r for r in load_labels(DEV) if Path(r["image"]).stem in names]
    for r in rows:
        r["image"] = str(DEV / r["image"])
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_evaluate_real_slice_without_detector(tmp_path: Path) -> None:
    """Text proposals only (no model file needed) on ten real photos of several plate styles."""
    names = ["test_002", "test_010", "test_017", "test_028", "test_041", "test_052", "test_062"]
    names += ["test_068", "test_083", "test_091"]
    dataset = _subset(tmp_path / "ds", names)
    report = evaluate(dataset, PlateRecognizer(None, RapidOcrBackend(threads=1), "eu"))
    assert report.images == 10
    assert report.detection_recall >= 0.8
    assert report.detection_precision >= 0.8
    assert report.exact_plate_accuracy >= 0.7
    assert report.char_accuracy >= 0.85
    assert report.exact_plate_accuracy <= report.exact_plate_accuracy_o0 <= 1.0
    assert report.ms_per_image > 0 and report.detect_ms_per_image > 0 and report.ocr_ms_per_image > 0

    out = write_report(report, tmp_path / "report", dataset)
    data = json.loads((out / "report.json").read_text())
    assert data["summary"]["images"] == 10 and len(data["plates"]) == 10
    assert "| exact_plate_accuracy |" in (out / "report.md").read_text()
    if report.exact_plate_accuracy < 1.0:
        assert (out / "worst_cases.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not MODEL.is_file(), reason=f"plate detector not present: {MODEL}")
def test_cli_json_on_first_12_images(tmp_path: Path) -> None:
    env = {**os.environ, "BAYWARDEN_INFER_THREADS": "1"}
    cmd = [sys.executable, "-m", "anpr.evaluate", "--dataset", str(DEV), "--limit", "12", "--json"]
    cmd += ["--detector-path", str(MODEL), "--report-dir", str(tmp_path / "rep")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["images"] == 12
    for key in SUMMARY_KEYS[1:5]:
        assert 0.0 <= summary[key] <= 1.0, key
    # the first 12 are the hardest part of the set (9 vanity/foreign plates): still clearly working
    assert summary["detection_recall"] >= 0.75
    assert summary["exact_plate_accuracy"] >= 0.4
    assert summary["char_accuracy"] >= 0.7
    assert 0 < summary["ms_per_image"] < 5000
    assert (tmp_path / "rep" / "report.json").is_file()


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"labels\.jsonl"):
        evaluate(tmp_path, PlateRecognizer(None, RapidOcrBackend(threads=1)))


def test_report_summary_is_json_serialisable() -> None:
    report = EvalReport("d", 1, 1, 1, 1.0, 1.0, 0.5, 0.5, 0.75, 12.345678, 1.0, 2.0)
    assert json.loads(json.dumps(report.summary()))["ms_per_image"] == 12.3457
