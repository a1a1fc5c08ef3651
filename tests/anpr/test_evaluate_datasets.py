"""The evaluator over several folders: crop sets, splits, auto-accept figures, JSON and report rows.

The arithmetic is checked with a fake recogniser that returns prepared reads (the input of the
metric under test) on tiny folders written here; one run goes through the real pipeline on slices
of the shared datasets (skipped where they are missing, failed under CI=true)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import anpr.recognizer
from anpr.detector import DETECTOR_PATH_ENV
from anpr.evaluate import (
    DEFAULT_THRESHOLD,
    SUMMARY_KEYS,
    UsageError,
    combine,
    evaluate,
    height_bin,
    main_eval,
    parse_dataset_spec,
    select_split,
)
from anpr.plates import PlateRead
from anpr.train import DEFAULT_ONNX
from anpr.types import PlateCandidate
from enforcement.rules import Rules
from tests.conftest import DATASETS, need

REPO = Path(__file__).resolve().parents[2]
DEV = DATASETS / "plates-dev"
CROPS_US = DATASETS / "plate-crops-us"
MODEL = Path(os.environ.get(DETECTOR_PATH_ENV, DEFAULT_ONNX))


class FixedReads:
    """A recogniser (anpr.types.Recognizer) answering each call in turn with prepared candidates."""

    def __init__(self, answers: list[list[PlateCandidate]]) -> None:
        self.answers = iter(answers)
        self.seen: list[tuple[int, int]] = []

    def recognize(self, image: np.ndarray) -> list[PlateCandidate]:
        self.seen.append(image.shape[:2])
        return next(self.answers)


class FixedBoxReads(FixedReads):
    """Also has `read_box`, as PlateRecognizer does: what the evaluator uses on crop sets."""

    def __init__(self, reads: list[PlateRead | None]) -> None:
        super().__init__([])
        self.reads = iter(reads)
        self.boxes: list[tuple[float, ...]] = []

    def read_box(self, image: np.ndarray, box: tuple[float, ...]) -> PlateRead | None:
        self.boxes.append(tuple(box))
        return next(self.reads)


def cand(box, text, conf=0.9) -> PlateCandidate:
    return PlateCandidate(box=tuple(float(v) for v in box), det_confidence=0.9, text=text, confidence=conf)


def pread(text: str, conf: float) -> PlateRead:
    return PlateRead(text=text, confidence=conf, format_name="generic")


def write_set(folder: Path, rows: list[dict], sizes: list[tuple[int, int]] | None = None) -> Path:
    """A labelled folder with blank JPEGs (h, w from `sizes`, default 120x200)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        h, w = sizes[i] if sizes else (120, 200)
        row.setdefault("image", f"images/{i:03d}.jpg")
        cv2.imwrite(str(folder / row["image"]), np.full((h, w, 3), 128, np.uint8))
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


BOX_A, BOX_B = (10, 10, 90, 30), (100, 50, 180, 80)


def scene_set(folder: Path) -> Path:
    return write_set(
        folder,
        [
            {"plates": [{"box": list(BOX_A), "text": "AB123CD"}, {"box": list(BOX_B), "text": "XY99ZZ"}]},
            {"plates": [{"box": list(BOX_A), "text": "KL456MN"}, {"box": list(BOX_B), "text": None}]},
            {"plates": [{"box": list(BOX_A), "text": "QR789ST"}]},
        ],
    )


def test_auto_accept_length_errors_and_detection_on_scenes(tmp_path: Path) -> None:
    answers = [
        [cand(BOX_A, "AB123CD", 0.9), cand(BOX_B, "XY99ZZ1", 0.95)],  # exact accepted; longer, accepted
        [cand(BOX_A, "KL456MN", 0.5), cand((0, 100, 40, 119), "FAKE12", 0.99)],  # exact unsure; a false plate
        [],  # missed
    ]
    report = evaluate(scene_set(tmp_path / "s"), FixedReads(answers), warmup=False, threshold=0.8)
    assert report.kind == "scenes" and report.split == "val" and report.name == "s"
    assert report.plates == 5 and report.text_plates == 4 and report.predictions == 4
    assert report.detection_recall == pytest.approx(3 / 5)  # the text-less box B is missed too
    assert report.detection_precision == pytest.approx(3 / 4)
    assert report.exact_plate_accuracy == pytest.approx(2 / 4)
    assert report.auto_accept_coverage == pytest.approx(2 / 4)
    assert report.auto_accept_precision == pytest.approx(1 / 2)
    assert report.auto_accept_unmatched == 1
    assert report.length_errors == {"missed": 1, "empty": 0, "shorter": 0, "longer": 1, "same_length_wrong": 0}
    assert [r.plate_height_px for r in report.results] == [20.0, 30.0, 20.0, 20.0]


def test_nothing_accepted_gives_null_precision(tmp_path: Path) -> None:
    answers = [[cand(BOX_A, "AB123CD", 0.79)], [cand(BOX_A, "KL456MN", 0.1)], [cand(BOX_A, "", 0.99)]]
    report = evaluate(scene_set(tmp_path / "s"), FixedReads(answers), warmup=False, threshold=0.8)
    assert report.auto_accept_threshold == 0.8
    assert DEFAULT_THRESHOLD == Rules().confirmation_threshold == 0.99  # the review threshold of the rules
    assert report.auto_accept_coverage == 0.0
    assert report.auto_accept_precision is None
    assert json.loads(json.dumps(report.summary()))["auto_accept_precision"] is None
    assert report.length_errors["empty"] == 1 and report.length_errors["missed"] == 1


def crop_set(folder: Path) -> Path:
    rows = [
        {"text": "FUW999", "split": "val"},
        {"text": "ABC1234", "split": "val"},
        {"text": "ZZZ111", "split": "train"},
        {"text": "CUST0M", "split": "val"},
        {"text": "7ABC123", "split": "val"},
    ]
    return write_set(folder, rows, sizes=[(40, 100), (20, 60), (50, 100), (70, 150), (30, 80)])


def test_crop_set_reads_the_whole_image_without_detection(tmp_path: Path) -> None:
    reads = [pread("FUW999", 0.9), pread("ABC123", 0.85), None, pread("7ABC1Z3", 0.95)]
    rec = FixedBoxReads(reads)
    report = evaluate(crop_set(tmp_path / "c"), rec, warmup=False, threshold=0.8)
    assert report.kind == "crops" and report.split == "val"
    assert report.images == 4 and report.plates == 4 and report.predictions == 0
    assert report.detection_recall is None and report.detection_precision is None
    assert report.auto_accept_unmatched is None
    assert rec.boxes == [(0, 0, 100, 40), (0, 0, 60, 20), (0, 0, 150, 70), (0, 0, 80, 30)]
    assert rec.seen == []  # recognize (detection) never ran
    assert [r.plate_height_px for r in report.results] == [40, 20, 70, 30]
    assert [r.read for r in report.results] == ["FUW999", "ABC123", "", "7ABC1Z3"]
    assert report.exact_plate_accuracy == pytest.approx(1 / 4)
    assert report.auto_accept_coverage == pytest.approx(3 / 4)
    assert report.auto_accept_precision == pytest.approx(1 / 3)
    assert report.length_errors == {"missed": 0, "empty": 1, "shorter": 1, "longer": 0, "same_length_wrong": 1}
    summary = report.summary()
    assert summary["detection_recall"] is None and summary["kind"] == "crops"


def test_crop_set_without_read_box_takes_the_most_confident_candidate(tmp_path: Path) -> None:
    answers = [[cand(BOX_A, "FUW999", 0.6), cand(BOX_B, "ALASKA", 0.9)], [], [cand(BOX_A, None, 0.0)], []]
    report = evaluate(crop_set(tmp_path / "c"), FixedReads(answers), warmup=False)
    assert [r.read for r in report.results] == ["ALASKA", "", "", ""]
    assert report.detection_recall is None


def test_split_filtering(tmp_path: Path) -> None:
    rows = [{"split": "train"}, {"split": "val"}, {"split": "val"}]
    assert select_split(rows, None) == (rows[1:], "val")
    assert select_split(rows, "train") == (rows[:1], "train")
    assert select_split(rows, "all") == (rows, "all")
    held_out = [{"image": "a"}, {"image": "b"}]  # no split field (plates-dev): all held out
    assert select_split(held_out, None) == (held_out, "val")
    assert select_split(held_out, "train") == ([], "train")
    with pytest.raises(ValueError, match="split"):
        select_split(rows, "test")

    folder = crop_set(tmp_path / "c")
    report = evaluate(folder, FixedBoxReads([pread("ZZZ111", 0.9)]), split="train", warmup=False)
    assert report.split == "train" and [r.label for r in report.results] == ["ZZZ111"]
    report = evaluate(folder, FixedBoxReads([pread("X", 0.9)] * 5), split="all", limit=2, warmup=False)
    assert report.images == 2
    with pytest.raises(UsageError, match="no rows in split 'train'"):
        evaluate(scene_set(tmp_path / "s"), FixedReads([]), split="train")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("../shared/datasets/plate-crops-us:val", (Path("../shared/datasets/plate-crops-us"), "val")),
        ("data/plates-dev", (Path("data/plates-dev"), None)),
        ("x:all", (Path("x"), "all")),
        ("odd:name", (Path("odd:name"), None)),
    ],
)
def test_parse_dataset_spec(spec: str, expected) -> None:
    assert parse_dataset_spec(spec) == expected


def test_height_bins() -> None:
    got = [height_bin(h) for h in (5, 16, 23.9, 24, 47, 48, 63.9, 64, 300)]
    assert got == ["<16", "16-24", "16-24", "24-32", "32-48", "48-64", "48-64", ">=64", ">=64"]


def test_two_folders_json_last_line_and_report(tmp_path: Path, monkeypatch, capsys) -> None:
    scenes, crops = scene_set(tmp_path / "scenes"), crop_set(tmp_path / "crops")
    warm: list[PlateCandidate] = []  # main_eval runs each folder's first image once untimed
    fake = FixedBoxReads([None, pread("FUW999", 0.9), None])
    fake.answers = iter([warm, [cand(BOX_A, "AB123CD", 0.9)], [cand(BOX_A, "KL456MN", 0.9)]])
    monkeypatch.setattr(anpr.recognizer, "make_recognizer", lambda **kw: fake)
    report = main_eval(
        [str(scenes), f"{crops}:val"], json_out=True, report_dir=tmp_path / "rep", limit=2, threshold=0.85
    )
    assert len(fake.seen) == 3  # the scene warm-up + 2 scenes; 1 crop warm-up + 2 crops went to read_box
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary == json.loads(json.dumps(report.summary()))
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["images"] == 4 and summary["text_plates"] == 5 and summary["kind"] == "mixed"
    # detection over the scene set only: 2 of its 4 boxes (B has no candidate), no false boxes
    assert summary["detection_recall"] == 0.5 and summary["detection_precision"] == 1.0
    assert summary["exact_plate_accuracy"] == pytest.approx(round(3 / 5, 4))
    assert summary["auto_accept_threshold"] == 0.85
    assert summary["auto_accept_coverage"] == pytest.approx(round(3 / 5, 4))
    assert summary["auto_accept_precision"] == 1.0
    assert "exact_plate_accuracy_o0" in summary
    parts = summary["datasets"]
    assert [(d["name"], d["kind"], d["split"]) for d in parts] == [
        ("scenes", "scenes", "val"),
        ("crops", "crops", "val"),
    ]
    assert parts[1]["detection_recall"] is None and parts[1]["images"] == 2
    assert parts[0]["exact_plate_accuracy"] == pytest.approx(round(2 / 3, 4))
    assert parts[1]["length_errors"] == {"missed": 0, "empty": 1, "shorter": 0, "longer": 0, "same_length_wrong": 0}

    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["summary"]["datasets"][1]["name"] == "crops"
    rows = data["plates"]
    assert len(rows) == 5
    assert rows[0] == {
        **rows[0],
        "dataset": "scenes",
        "image": "images/000.jpg",
        "label": "AB123CD",
        "read": "AB123CD",
        "confidence": 0.9,
        "exact": True,
        "plate_height_px": 20.0,
    }
    assert rows[1]["read"] is None and rows[1]["exact"] is False  # box B of image 0: missed
    assert [(r["dataset"], r["read"], r["plate_height_px"]) for r in rows[3:]] == [
        ("crops", "FUW999", 40.0),
        ("crops", "", 20.0),
    ]
    assert data["by_height"]["crops:val"] == [
        {"bin": "16-24", "plates": 1, "exact": 0, "accuracy": 0.0},
        {"bin": "32-48", "plates": 1, "exact": 1, "accuracy": 1.0},
    ]
    for png in ("accuracy_by_height.png", "worst_cases.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "## `crops` (crops, val)" in (tmp_path / "rep" / "report.md").read_text()


def test_combine_of_crop_sets_only_has_null_detection(tmp_path: Path) -> None:
    folder = crop_set(tmp_path / "c")
    one = evaluate(folder, FixedBoxReads([pread("FUW999", 0.9)] * 4), warmup=False, threshold=0.8)
    two = evaluate(folder, FixedBoxReads([pread("FUW999", 0.1)] * 4), warmup=False, threshold=0.8)
    both = combine([one, two], 0.8)
    assert both.detection_recall is None and both.auto_accept_unmatched is None
    assert both.kind == "crops" and both.images == 8
    assert both.auto_accept_coverage == pytest.approx(4 / 8)
    assert both.auto_accept_precision == pytest.approx(1 / 4)


def test_cli_unknown_ocr_backend_is_a_usage_error(tmp_path: Path) -> None:
    folder = crop_set(tmp_path / "c")
    cmd = [sys.executable, "-m", "anpr.evaluate", "--dataset", str(folder), "--ocr", "nope", "--detector", "none"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown OCR backend 'nope'" in proc.stderr and "rapidocr" in proc.stderr


def test_two_datasets_through_the_real_pipeline(tmp_path: Path) -> None:
    """A slice of plates-dev (scenes) and of plate-crops-us val (crops), the default recogniser (~5 s)."""
    need(DEV.is_dir() and CROPS_US.is_dir(), f"shared datasets missing under {DATASETS}")
    need(MODEL.is_file(), f"plate detector not present: {MODEL}")
    env = {**os.environ, "BAYWARDEN_INFER_THREADS": "1"}
    cmd = [sys.executable, "-m", "anpr.evaluate", "--dataset", str(DEV), "--dataset", f"{CROPS_US}:val"]
    cmd += ["--limit", "3", "--json", "--detector-path", str(MODEL), "--report", str(tmp_path / "rep")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=280, check=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["images"] == 6 and summary["text_plates"] == 6
    dev, us = summary["datasets"]
    assert (dev["name"], dev["kind"], dev["split"]) == ("plates-dev", "scenes", "val")
    assert (us["name"], us["kind"], us["split"]) == ("plate-crops-us", "crops", "val")
    assert us["detection_recall"] is None and dev["detection_recall"] >= 2 / 3
    for part in (dev, us, summary):
        assert 0.0 <= part["exact_plate_accuracy"] <= part["exact_plate_accuracy_o0"] <= 1.0
        assert 0.0 <= part["auto_accept_coverage"] <= 1.0
        assert sum(part["length_errors"].values()) == round(part["text_plates"] * (1 - part["exact_plate_accuracy"]))
    assert dev["exact_plate_accuracy"] >= 1 / 3  # the first dev images are hard ones (vanity, foreign)
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["plates"]
    assert [r["dataset"] for r in rows] == ["plates-dev"] * 3 + ["plate-crops-us"] * 3
    assert all(r["plate_height_px"] > 0 for r in rows)
    assert (tmp_path / "rep" / "accuracy_by_height.png").is_file()


def test_recognizer_path_picks_the_reader_model(tmp_path: Path) -> None:
    """`--recognizer-path` reads with the given model: a copy of the committed one reads a crop slice
    exactly as the default; a missing file or a backend without that model is an error."""
    from anpr.platerec import DEFAULT_MODEL as REC

    need(CROPS_US.is_dir() and REC.is_file(), "plate-crops-us or the plate recogniser missing")
    env = {**os.environ, "BAYWARDEN_INFER_THREADS": "1"}
    base = [sys.executable, "-m", "anpr.evaluate", "--dataset", f"{CROPS_US}:val", "--limit", "6", "--json",
            "--ocr", "platerec", "--formats", "generic"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=200)

    copy = tmp_path / "copy.onnx"
    copy.write_bytes(REC.read_bytes())
    default, other = run(), run("--recognizer-path", str(copy))
    keys = ("exact_plate_accuracy", "char_accuracy", "auto_accept_coverage")
    a, b = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (default, other))
    assert [a[k] for k in keys] == [b[k] for k in keys]
    missing = run("--recognizer-path", str(tmp_path / "gone.onnx"))
    assert missing.returncode == 1 and "not found" in missing.stderr and "gone.onnx" in missing.stderr
    assert "Traceback" not in missing.stderr
    wrong = run("--ocr", "rapidocr", "--recognizer-path", str(REC))
    assert wrong.returncode == 2 and "ensemble or platerec" in wrong.stderr


def test_calibrate_records_the_model_it_fitted(tmp_path: Path) -> None:
    from anpr.platerec import DEFAULT_MODEL as REC

    need(CROPS_US.is_dir() and REC.is_file(), "plate-crops-us or the plate recogniser missing")
    out, copy = tmp_path / "calibration.json", tmp_path / "other.onnx"
    copy.write_bytes(REC.read_bytes())
    cmd = [sys.executable, "-m", "anpr.calibrate", "--dataset", f"{CROPS_US}:val", "--limit", "8", "--out", str(out),
           "--recognizer-path", str(copy)]
    subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=200, check=True)
    fitted = json.loads(out.read_text())
    digest = hashlib.sha256(REC.read_bytes()).hexdigest()[:16]
    assert fitted["recognizer_sha256"] == digest and fitted["plates"] == 8
