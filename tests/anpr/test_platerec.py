"""The plate recogniser trained here (anpr/weights/plate_recognizer.onnx), run with onnxruntime."""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from anpr.ocr import OcrLoadError, TextRead, make_ocr
from anpr.platerec import (
    DEFAULT_MODEL,
    MODEL_ALPHABET,
    PlateRecOcrBackend,
    greedy_decode,
    preprocess,
    stack_at_separator,
)
from anpr.plates import ALPHABET
from tests.conftest import DATASETS, need

CROPS_BR = DATASETS / "plate-crops"
CROPS_US = DATASETS / "plate-crops-us"

# Fixed validation crops (never trained on): the first ten val rows of each set in file order.
VAL_SAMPLES = 10


@pytest.fixture(scope="module")
def rec() -> PlateRecOcrBackend:
    need(DEFAULT_MODEL.is_file(), f"plate recogniser not present: {DEFAULT_MODEL}")
    return PlateRecOcrBackend(threads=1)


@cache
def val_rows(folder: Path) -> list[dict]:
    with (folder / "labels.jsonl").open() as fh:
        return [row for row in map(json.loads, fh) if row.get("split") == "val"]


def load(folder: Path, row: dict) -> np.ndarray:
    img = cv2.imread(str(folder / row["image"]))
    assert img is not None, row["image"]
    return img


def test_committed_model_loads_with_its_metadata(rec: PlateRecOcrBackend) -> None:
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert meta["alphabet"] == MODEL_ALPHABET == rec.alphabet
    assert meta["blank_index"] == 0
    inp = rec.session.get_inputs()[0]
    assert inp.shape[1:] == [1, meta["input_height"], meta["input_width"]]
    assert DEFAULT_MODEL.stat().st_size <= 10_000_000


def test_backend_module_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys; from anpr.ocr import make_ocr; o = make_ocr('platerec', threads=1); "
        "import numpy as np; o.read(np.full((40, 120, 3), 200, np.uint8)); "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    need(DEFAULT_MODEL.is_file(), f"plate recogniser not present: {DEFAULT_MODEL}")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_reads_validation_crops(rec: PlateRecOcrBackend) -> None:
    need(CROPS_BR.is_dir() and CROPS_US.is_dir(), f"shared datasets missing under {DATASETS}")
    crops, texts = [], []
    for folder in (CROPS_BR, CROPS_US):
        for row in val_rows(folder)[:VAL_SAMPLES]:
            crops.append(load(folder, row))
            texts.append(row["text"])
    reads = rec.read_many(crops)
    got = [r[0].text if r else "" for r in reads]
    right = sum(g == t for g, t in zip(got, texts, strict=True))
    assert right >= 0.8 * len(texts), list(zip(texts, got, strict=True))
    for r in reads:
        read = r[0]
        assert isinstance(read, TextRead)
        assert len(read.char_confidences) == len(read.text_raw)
        assert read.confidence == pytest.approx(float(np.prod(read.char_confidences)))
    assert np.median([r[0].confidence for r, t in zip(reads, texts, strict=True) if r[0].text == t]) > 0.5


def test_single_and_batched_reads_agree(rec: PlateRecOcrBackend) -> None:
    need(CROPS_US.is_dir(), f"shared datasets missing under {DATASETS}")
    crops = [load(CROPS_US, row) for row in val_rows(CROPS_US)[:4]]
    batched = rec.read_many(crops)
    for crop, many in zip(crops, batched, strict=True):
        one = rec.read(crop)
        assert one[0].text_raw == many[0].text_raw
        assert one[0].confidence == pytest.approx(many[0].confidence, rel=1e-4, abs=1e-5)


def test_ctc_posterior_feeds_the_plate_decoder(rec: PlateRecOcrBackend) -> None:
    need(CROPS_BR.is_dir(), f"shared datasets missing under {DATASETS}")
    row = val_rows(CROPS_BR)[0]
    read = rec.read(load(CROPS_BR, row))[0]
    assert read.ctc is not None
    assert read.ctc.alnum.shape[1] == len(ALPHABET)
    assert read.ctc.blank.shape[0] == read.ctc.alnum.shape[0] > len(row["text"])
    greedy, _ = read.ctc.greedy()
    assert greedy == read.text


def test_tiny_blank_and_empty_crops_give_no_confident_read(rec: PlateRecOcrBackend) -> None:
    tiny = np.random.default_rng(0).integers(0, 255, (4, 8, 3), dtype=np.uint8)
    blank = np.full((60, 200, 3), 255, np.uint8)
    empty = np.zeros((0, 0, 3), np.uint8)
    grey_tiny = np.full((3, 2), 90, np.uint8)
    for crop in (tiny, blank, empty, grey_tiny):
        reads = rec.read(crop)
        assert reads == [] or reads[0].confidence < 0.5 or reads[0].text == ""
    assert rec.read_many([]) == []
    assert preprocess(empty) is None


def test_make_ocr_builds_it(rec: PlateRecOcrBackend) -> None:
    ocr = make_ocr("platerec", threads=1)
    assert ocr.name == "platerec"


def test_missing_or_corrupt_model_raises_load_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(OcrLoadError, match=r"nope\.onnx"):
        PlateRecOcrBackend(missing)
    bad = tmp_path / "broken_recogniser.onnx"
    bad.write_bytes(b"this is not an onnx model" * 10)
    with pytest.raises(OcrLoadError, match=r"broken_recogniser\.onnx"):
        PlateRecOcrBackend(bad)


def test_stacked_two_line_plate_keeps_both_lines(rec: PlateRecOcrBackend) -> None:
    """No val crop is a two-line plate, so one is made from a real val crop (letters over digits);
    the crop is split back into its lines side by side (anpr.recognizer.split_two_lines)."""
    need(CROPS_BR.is_dir(), f"shared datasets missing under {DATASETS}")
    row = next(r for r in val_rows(CROPS_BR) if r["image"].endswith(STACKED_SOURCE))
    stacked = stack_at_separator(load(CROPS_BR, row))
    assert stacked.shape[1] / stacked.shape[0] < 1.45
    read = rec.read(stacked)[0]
    assert read.text == row["text"]
    # without the split the same crop loses characters
    flat = rec.session.run(None, {"image": preprocess(stacked, two_lines=False)[0][None, None]})[0][0]
    assert greedy_decode(flat)[0] != row["text"]


STACKED_SOURCE = "_AXF2360_0223_0230_0079_0034.jpg"
