"""Plate text recogniser trained here (`anpr.train_recognizer`), run with onnxruntime only.

The network is EasyOCR's generation-2 CRNN (VGG features, two BiLSTMs, CTC) fine-tuned on plate
crops with the alphabet `0-9A-Z` plus the CTC blank (index 0). Input: one grey channel, height 64,
fixed width 256; the crop is scaled to height 64 keeping its aspect, then its right edge is
repeated up to the fixed width (a crop wider than 4:1 is squeezed to fit). Output: per-frame
softmax probabilities, 4 px of input width per frame.

No torch here: training (`anpr/train_recognizer.py`) imports `preprocess` from this module so
that both sides prepare crops the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from anpr.detector import default_threads
from anpr.ocr import OcrLoadError, TextRead
from anpr.plates import ALPHABET, CtcScores

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "plate_recognizer.onnx"
MODEL_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # model class k + 1 is MODEL_ALPHABET[k]
BLANK = 0
INPUT_HEIGHT = 64
INPUT_WIDTH = 256
FRAME_STRIDE = 4  # input pixels per output frame
# Crops narrower than this (width / height) are taken as stacked two-line plates and fed as the
# two lines side by side (`anpr.recognizer.split_two_lines`). Single-line plate crops in the
# training and validation data are all wider than 1.6:1 (US crops near 2:1 are one line).
TWO_LINE_ASPECT = 1.45
MIN_SIDE = 4  # crops smaller than this in either direction are not read


def _grey(crop: np.ndarray) -> np.ndarray:
    if crop.ndim == 2:
        return crop
    if crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2GRAY)
    if crop.shape[2] == 1:
        return crop[:, :, 0]
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)


def two_line_view(crop: np.ndarray) -> np.ndarray | None:
    """The side-by-side version of a stacked two-line crop, or None for a one-line crop."""
    h, w = crop.shape[:2]
    if h == 0 or w / h >= TWO_LINE_ASPECT:
        return None
    from anpr.recognizer import split_two_lines  # lazy: anpr.recognizer imports anpr.ocr

    bgr = crop if crop.ndim == 3 and crop.shape[2] == 3 else cv2.cvtColor(_grey(crop), cv2.COLOR_GRAY2BGR)
    return split_two_lines(bgr)


def preprocess(
    crop: np.ndarray, width: int = INPUT_WIDTH, height: int = INPUT_HEIGHT, two_lines: bool = True
) -> tuple[np.ndarray, int] | None:
    """Crop (BGR or grey uint8) -> ((height, width) float32 in [-1, 1], used width in pixels).

    None when the crop is empty or smaller than MIN_SIDE pixels."""
    if crop is None or crop.size == 0 or crop.ndim not in (2, 3) or min(crop.shape[:2]) < MIN_SIDE:
        return None
    if two_lines:
        joined = two_line_view(crop)
        if joined is not None:
            crop = joined
    grey = _grey(crop)
    if grey.dtype != np.uint8:
        grey = np.clip(grey, 0, 255).astype(np.uint8)
    h, w = grey.shape
    used = int(min(width, max(FRAME_STRIDE, round(height * w / h))))
    interp = cv2.INTER_CUBIC if h < height else cv2.INTER_AREA
    img = cv2.resize(grey, (used, height), interpolation=interp)
    if used < width:
        img = cv2.copyMakeBorder(img, 0, 0, 0, width - used, cv2.BORDER_REPLICATE)
    return (img.astype(np.float32) / 127.5 - 1.0), used


def frames_for(used_width: int, total_frames: int) -> int:
    """Output frames that see the crop (the rest only see the repeated edge)."""
    return min(total_frames, math.ceil(used_width / FRAME_STRIDE) + 2)


def greedy_decode(probs: np.ndarray, alphabet: str = MODEL_ALPHABET) -> tuple[str, tuple[float, ...]]:
    """Best path: argmax per frame, repeats merged, blanks dropped; per-character max probability."""
    ids = probs.argmax(1)
    conf = probs.max(1)
    text, confs, prev = [], [], -1
    for i, c in zip(ids, conf, strict=True):
        if i != prev and i != BLANK:
            text.append(alphabet[i - 1])
            confs.append(float(c))
        prev = int(i)
    return "".join(text), tuple(confs)


def stack_at_separator(img: np.ndarray) -> np.ndarray:
    """A stacked two-line plate made from a one-line Brazilian crop (ABC-1234): letters over digits,
    cut in the widest gap between glyphs near the middle (the dash has no ink in the upper rows)."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    _, ink = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    band = ink[int(h * 0.3) : int(h * 0.45)]
    if band.size == 0:
        return img
    if band.mean() > 127:  # light text on a dark plate
        band = 255 - band
    low = band.mean(0) < 0.25 * max(1.0, float(band.mean(0).max()))
    widest, cut, x = -1, w // 2, 0
    while x < w:
        if not low[x]:
            x += 1
            continue
        end = x
        while end < w and low[end]:
            end += 1
        centre = (x + end) // 2
        if 0.3 * w <= centre <= 0.65 * w and end - x > widest:
            widest, cut = end - x, centre
        x = end
    top, bottom = img[:, :cut], img[:, cut:]
    width = max(top.shape[1], bottom.shape[1])
    top = cv2.copyMakeBorder(top, 0, 0, 0, width - top.shape[1], cv2.BORDER_REPLICATE)
    bottom = cv2.copyMakeBorder(bottom, 0, 0, 0, width - bottom.shape[1], cv2.BORDER_REPLICATE)
    return np.vstack([top, bottom])


# -------------------------------------------------------------------------------- augmentation


class PlateRecOcrBackend:
    """The plate recogniser as an OCR backend (`make_ocr("platerec")`)."""

    name = "platerec"

    def __init__(self, model_path: Path | None = None, threads: int | None = None) -> None:
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - core dependency
            raise OcrLoadError(f"onnxruntime is not installed: {exc}") from exc
        if not path.is_file():
            raise OcrLoadError(f"plate recogniser model not found: {path}")
        threads = default_threads() if threads is None else threads
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise OcrLoadError(f"cannot load plate recogniser model {path}: {exc}") from exc
        self.model_path = path
        meta = self._metadata(path)
        self.alphabet: str = meta.get("alphabet", MODEL_ALPHABET)
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        self._input = inp.name
        self._height = int(shape[2]) if isinstance(shape[2], int) else int(meta.get("input_height", INPUT_HEIGHT))
        self._width = int(shape[3]) if isinstance(shape[3], int) else int(meta.get("input_width", INPUT_WIDTH))
        if len(self.alphabet) + 1 != int(self.session.get_outputs()[0].shape[2] or len(self.alphabet) + 1):
            raise OcrLoadError(f"{path}: output classes do not match the alphabet of {path.with_suffix('.json')}")
        # model class index for each letter of anpr.plates.ALPHABET (its CTC decoder's order)
        self._alnum = [self.alphabet.index(ch) + 1 for ch in ALPHABET]

    @staticmethod
    def _metadata(path: Path) -> dict:
        side = path.with_suffix(".json")
        if side.is_file():
            try:
                return json.loads(side.read_text())
            except (OSError, ValueError):
                return {}
        return {}

    def read(self, crop_bgr: np.ndarray) -> list[TextRead]:
        return self.read_many([crop_bgr])[0]

    def probabilities(self, crops_bgr: Sequence[np.ndarray], batch: int = 16) -> list[np.ndarray | None]:
        """Per-frame posteriors (frames over the crop only) for each crop; None for unreadable ones."""
        out: list[np.ndarray | None] = [None] * len(crops_bgr)
        prepared = []
        for i, crop in enumerate(crops_bgr):
            p = preprocess(crop, self._width, self._height) if isinstance(crop, np.ndarray) else None
            if p is not None:
                prepared.append((i, *p))
        for start in range(0, len(prepared), batch):
            chunk = prepared[start : start + batch]
            x = np.stack([img for _, img, _ in chunk])[:, None]
            probs = self.session.run(None, {self._input: x})[0]
            for k, (i, _, used) in enumerate(chunk):
                out[i] = probs[k, : frames_for(used, probs.shape[1])].astype(np.float64)
        return out

    def read_many(self, crops_bgr: Sequence[np.ndarray], batch: int = 16) -> list[list[TextRead]]:
        reads: list[list[TextRead]] = []
        for probs in self.probabilities(crops_bgr, batch):
            if probs is None:
                reads.append([])
                continue
            text, confs = greedy_decode(probs, self.alphabet)
            confidence = float(np.prod(confs)) if confs else 0.0
            ctc = CtcScores.from_probs(probs, BLANK, self._alnum)
            reads.append([TextRead(text, confidence, confs, ctc)])
        return reads
