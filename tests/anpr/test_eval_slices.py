"""CI's small eval slice of each dev set with the default reader: floors well under the measured
figures (README), so a broken model, calibration or region change fails here, not on a customer's
cameras. The figures themselves come from `baywarden anpr eval` on the whole sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anpr.evaluate import evaluate
from anpr.recognizer import make_recognizer
from tests.conftest import DATASETS, need


@pytest.fixture(scope="module")
def reader():
    need((DATASETS / "plate-crops-us").is_dir(), f"shared datasets missing under {DATASETS}")
    return {region: make_recognizer(ocr="ensemble", region=region, threads=1) for region in ("generic", "eu")}


@pytest.mark.parametrize(
    ("dataset", "region", "limit", "floor"),
    [
        ("plate-crops-us", "generic", 30, 0.75),  # measured 0.927 on all 109
        ("plate-crops", "generic", 30, 0.80),  # measured 0.950 on all 181
        ("plates-dev", "eu", 12, 0.60),  # measured 0.935 on all 108; the first photos are the hard ones
    ],
)
def test_eval_slice_reaches_its_floor(reader, dataset, region, limit, floor):
    report = evaluate(DATASETS / dataset, reader[region], limit=limit, split="val", threshold=0.99, warmup=False)
    assert report.exact_plate_accuracy >= floor, [(r.label, r.read) for r in report.results if not r.exact]
    # Confident reads skip review: none of those in the slice may be wrong.
    assert report.auto_accept_precision in (None, 1.0), [
        (r.label, r.read, r.confidence) for r in report.results if r.confidence >= 0.99 and not r.exact
    ]


def test_us_scenes_slice_finds_and_reads_small_us_plates(reader, tmp_path):
    # bench/us_scenes.py: US val crops pasted at 60-100 px wide into real 1280x720 scenes (the private
    # photos' scale); detection and reading together. Measured 0.798 exact / recall 0.945 on all 109.
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(repo / "bench" / "us_scenes.py"), "--out", str(tmp_path), "--limit", "12",
                    "--datasets", str(DATASETS)], check=True, capture_output=True, timeout=120)
    report = evaluate(tmp_path, reader["generic"], threshold=0.99, warmup=False)
    assert report.images == 12 and report.detection_recall >= 0.75
    assert report.exact_plate_accuracy >= 0.5, [(r.label, r.read) for r in report.results if not r.exact]
    assert report.auto_accept_precision in (None, 1.0)


def test_us_scenes_on_train_cars_never_use_a_held_out_car(tmp_path):
    # `--hosts train`: the pipeline-level choosing set for recogniser changes (val crops, train-split cars)
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(repo / "bench" / "us_scenes.py"), "--out", str(tmp_path), "--limit", "6",
                    "--hosts", "train", "--datasets", str(DATASETS)], check=True, capture_output=True, timeout=120)
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    train_cars = {
        Path(r["image"]).name
        for r in map(json.loads, (DATASETS / "plates-train" / "labels.jsonl").read_text().splitlines())
        if r.get("split") == "train"
    }
    assert len(rows) == 6
    assert all(r["host"] in train_cars and r["source"].endswith("plates-train") for r in rows)
    assert all((tmp_path / r["image"]).is_file() and r["split"] == "val" for r in rows)
