"""Recognisers for the camera tests, built inside the worker process from these picklable factories.

`OcrRecognizer` is real OCR (RapidOCR's text detector + recogniser, in the wheel, offline) with a
plate-shaped filter; it knows nothing about the fixture's plate. `make_plate_recognizer` uses the
project's `anpr.recognizer.PlateRecognizer` once the plate detector weights exist (without them the
project recogniser only keeps whole-frame text proposals that fit a national format, and the
fixture's vanity plate M5-XSX fits none), else `OcrRecognizer`.
`BAYWARDEN_TEST_RECOGNIZER=ocr|project|auto` (default auto) forces the choice.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from pathlib import Path

import numpy as np

from anpr.types import PlateCandidate, Recognizer

_ALNUM = re.compile(r"[^A-Z0-9]")


class OcrRecognizer:
    """Whole-region RapidOCR, keeping text lines that look like a plate: 4-10 characters with both
    letters and digits, in a box 2 to 9 times wider than tall."""

    def __init__(self, threads: int = 1) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def recognize(self, image: np.ndarray) -> list[PlateCandidate]:
        result, _ = self.engine(image)
        out = []
        for quad, raw, score in result or []:
            text = _ALNUM.sub("", str(raw).upper())
            xs, ys = [p[0] for p in quad], [p[1] for p in quad]
            x1, y1, x2, y2 = float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))
            ratio = (x2 - x1) / max(y2 - y1, 1.0)
            if not (4 <= len(text) <= 10 and 2.0 <= ratio <= 9.0):
                continue
            if not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
                continue
            conf = float(score)
            out.append(PlateCandidate((x1, y1, x2, y2), conf, text, conf, (), None, str(raw)))
        return out


class NullRecognizer:
    """Finds nothing: for tests about processes and streams, where OCR time would only slow them."""

    def recognize(self, image: np.ndarray) -> list[PlateCandidate]:
        return []


def make_ocr_recognizer() -> OcrRecognizer:
    return OcrRecognizer()


def make_plate_recognizer() -> Recognizer:
    choice = os.environ.get("BAYWARDEN_TEST_RECOGNIZER", "auto")
    weights = Path(__file__).resolve().parents[2] / "anpr" / "weights" / "plate_detector.onnx"
    if choice == "project" or (choice == "auto" and weights.is_file()):
        from anpr.detector import OnnxPlateDetector
        from anpr.ocr import RapidOcrBackend
        from anpr.recognizer import PlateRecognizer

        return PlateRecognizer(detector=OnnxPlateDetector(weights, threads=1), ocr=RapidOcrBackend(threads=1))
    return OcrRecognizer()


def make_null_recognizer() -> NullRecognizer:
    return NullRecognizer()


def make_hanging_recognizer() -> NullRecognizer:
    """Never returns, like a model load stuck on a dead network share."""
    time.sleep(3600)
    return NullRecognizer()


class BrokenFor:
    """A factory that fails in the workers of the named cameras (like a missing model file there)
    and gives a NullRecognizer elsewhere. The worker names its process `camera:<name>` first."""

    def __init__(self, *cameras: str) -> None:
        self.cameras = cameras

    def __call__(self) -> NullRecognizer:
        me = multiprocessing.current_process().name.removeprefix("camera:")
        if me in self.cameras:
            raise RuntimeError(f"model file missing (camera {me}, pid {os.getpid()})")
        return NullRecognizer()
