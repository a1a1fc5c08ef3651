"""Plate detectors: a YOLO model exported to ONNX run with onnxruntime (default), or ultralytics.

The ONNX model is the ultralytics export of a one-class ("plate") detector with the raw head output
(1, 4 + classes, anchors): box centre, size (input pixels) and class scores, without NMS. Its input
(RGB, 0..1) is either static (e.g. 1x3x512x512: every frame is letterboxed into that square) or dynamic
in height and width (the committed model): then each large frame is scaled to a rectangle of its own
shape within a pixel budget (`input_shape`), so a 16:9 frame spends no computation on padding and its
plates enter the detector larger for the same cost.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

DETECTOR_PATH_ENV = "BAYWARDEN_PLATE_DETECTOR"
THREADS_ENV = "BAYWARDEN_INFER_THREADS"


def default_threads() -> int | None:
    """CPU threads per model (onnxruntime, torch): `BAYWARDEN_INFER_THREADS`, default 1.

    One thread per model was the fastest setting on the 2-core build machine (151 ms against
    399 ms per plates-dev photo with the runtime's own choice, beside other jobs), and a camera
    worker per process scales across cores better than threads inside one. `0` lets the runtime
    decide."""
    value = os.environ.get(THREADS_ENV, "").strip()
    threads = int(value) if value else 1
    return threads if threads > 0 else None


def default_model_path() -> Path:
    """`BAYWARDEN_PLATE_DETECTOR` if set, else the committed `anpr/weights/plate_detector.onnx`."""
    env = os.environ.get(DETECTOR_PATH_ENV, "").strip()
    if env:
        return Path(env)
    from anpr.train import DEFAULT_ONNX

    return DEFAULT_ONNX


class ModelLoadError(RuntimeError):
    """The detector model file is missing, unreadable or not the expected kind of model."""


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float


class PlateDetector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> list[Detection]: ...


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio and pad (grey 114, as ultralytics trains) to `size` (h, w).

    Returns the padded image, the scale applied and the (x, y) padding offset."""
    h, w = image.shape[:2]
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)  # as ultralytics does
    top, left = (th - nh) // 2, (tw - nw) // 2
    out = np.full((th, tw, 3), 114, dtype=np.uint8)
    out[top : top + nh, left : left + nw] = resized
    return out, scale, (float(left), float(top))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression on (N, 4) x1y1x2y2 boxes; returns kept indices, best first."""
    order = scores.argsort()[::-1]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


def tiles(shape: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """Overlapping windows (x1, y1, x2, y2) for a second, closer look at a frame's small plates.

    A 1280x720 frame goes into a 512 px detector at 0.4x (a 70 px plate becomes 28 px, where the
    detector misses many); its two 720x720 halves go in at 0.71x. Wide frames (>= 1.5:1) get square
    windows side by side (tall ones stacked), as many as cover the frame with neighbours overlapping by
    at least 20 % (two up to about 2.25:1, as 16:9 frames; a wide strip of bays more), others four
    windows of 2/3 the size; so a plate cut by one window lies whole in the next."""
    h, w = shape[:2]
    if w >= 1.5 * h:
        return [(x, 0, x + h, h) for x in _spread(w, h)]
    if h >= 1.5 * w:
        return [(0, y, w, y + w) for y in _spread(h, w)]
    tw, th = (2 * w + 2) // 3, (2 * h + 2) // 3
    return [(x, y, x + tw, y + th) for y in (0, h - th) for x in (0, w - tw)]


def _spread(length: int, side: int) -> list[int]:
    """Starts of windows of `side` along `length`: first at 0, last at the end, evenly spaced with
    neighbours overlapping by at least 20 % of `side` (two windows of a 16:9 frame; until 2026-12-07
    always two, which left the middle of frames wider than 2:1 unseen)."""
    k = max(2, math.ceil((length - side) / (0.8 * side)) + 1)
    return [round(i * (length - side) / (k - 1)) for i in range(k)]


def detect_tiled(detector: PlateDetector, image_bgr: np.ndarray, iou: float = 0.5) -> list[Detection]:
    """The detector's boxes from every window of `tiles`, in frame pixels, overlaps suppressed.
    A box cut by a window's inner edge is dropped (the other window holds that plate whole)."""
    h, w = image_bgr.shape[:2]
    found: list[Detection] = []
    for x1, y1, x2, y2 in tiles(image_bgr.shape):
        for d in detector.detect(image_bgr[y1:y2, x1:x2]):
            bx1, by1, bx2, by2 = d.box
            inner_cut = (bx1 <= 1 and x1 > 0) or (bx2 >= x2 - x1 - 1 and x2 < w) or (
                by1 <= 1 and y1 > 0) or (by2 >= y2 - y1 - 1 and y2 < h)
            if not inner_cut:
                found.append(Detection((bx1 + x1, by1 + y1, bx2 + x1, by2 + y1), d.score))
    if not found:
        return []
    boxes = np.array([d.box for d in found], dtype=np.float64)
    scores = np.array([d.score for d in found], dtype=np.float64)
    return [found[i] for i in nms(boxes, scores, iou)]


STRIDE = 32  # YOLO's largest stride: a dynamic input's sides are multiples of it
DEFAULT_PIXELS = 512 * 512  # a dynamic model's input budget: what the static 512x512 export cost
# Frames the square input would shrink below this go in at their own shape (a 1280x720 frame at 0.53x
# instead of 0.4x; 1600x900 at 0.43x instead of 0.32x). Smaller frames keep the square: on the
# 640x480 photos of plates-train-extra:val their own shape (0.93x instead of 0.8x) cost detection
# precision (0.825 -> 0.755) for little recall (0.606 -> 0.629). The threshold was the windows' one
# when it was set (windows now look closer at every shrunk frame, `anpr.recognizer.WINDOWS_BELOW`).
RECT_BELOW = 0.6


def input_shape(shape: tuple[int, ...], pixels: int = DEFAULT_PIXELS, stride: int = STRIDE) -> tuple[int, int]:
    """The (h, w) input for a frame of `shape` on a dynamic model: the frame's aspect, scaled so that
    the input holds about `pixels`, each side rounded up to a multiple of `stride` (the padding). No
    side exceeds twice the budget's square side (a panorama strip is letterboxed, not blown up)."""
    h, w = shape[:2]
    scale = min((pixels / max(1, h * w)) ** 0.5, 2 * pixels**0.5 / max(1, h, w))
    th = max(stride, -(-round(h * scale) // stride) * stride)
    tw = max(stride, -(-round(w * scale) // stride) * stride)
    return th, tw


class OnnxPlateDetector:
    """YOLO plate detector on onnxruntime's CPU provider."""

    def __init__(
        self,
        path: str | Path | None = None,
        conf: float = 0.25,
        iou: float = 0.5,
        threads: int | None = None,
        max_detections: int = 20,
        pixels: int = DEFAULT_PIXELS,
    ) -> None:
        threads = default_threads() if threads is None else threads
        self.path = Path(path) if path is not None else default_model_path()
        self.conf = conf
        self.iou = iou
        self.max_detections = max_detections
        self.pixels = pixels
        if not self.path.is_file():
            raise ModelLoadError(
                f"plate detector model not found: {self.path} (train/export one with anpr.train, or set "
                f"{DETECTOR_PATH_ENV})"
            )
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelLoadError(f"cannot load plate detector {self.path}: {exc}") from exc
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelLoadError(f"{self.path}: expected an NCHW input with 3 channels, got {shape}")
        self.input_name = inp.name
        # None: dynamic height and width (`input_shape` per frame)
        self.fixed_size = (int(shape[2]), int(shape[3])) if all(isinstance(d, int) for d in shape[2:]) else None
        side = round(pixels**0.5)
        self.input_size = self.fixed_size or (side, side)  # nominal, for callers that ask
        out_shape = self.session.get_outputs()[0].shape
        if len(out_shape) != 3 or (isinstance(out_shape[1], int) and out_shape[1] < 5):
            raise ModelLoadError(
                f"{self.path}: expected a YOLO head output (1, 4+classes, N), got {out_shape}"
            )

    def size_for(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The (h, w) input a frame of `shape` is letterboxed into: a dynamic model takes a large frame
        (one the budget's square would shrink below `RECT_BELOW`) at its own shape, a smaller one in
        that square, as a static export would."""
        if self.fixed_size is not None:
            return self.fixed_size
        side = round(self.pixels**0.5)
        if side / max(1, *shape[:2]) >= RECT_BELOW:
            return side, side
        return input_shape(shape, self.pixels)

    def scale_for(self, shape: tuple[int, ...]) -> float:
        """How much a frame of `shape` is scaled on its way into the detector."""
        th, tw = self.size_for(shape)
        return min(th / max(1, shape[0]), tw / max(1, shape[1]))

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        padded, scale, (dx, dy) = letterbox(image_bgr, self.size_for(image_bgr.shape))
        x = cv2.cvtColor(padded, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        pred = self.session.run(None, {self.input_name: x})[0][0]  # (4 + classes, N)
        scores = pred[4:].max(0)
        keep = scores >= self.conf
        if not keep.any():
            return []
        cx, cy, w, h = pred[:4, keep]
        scores = scores[keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        boxes = (boxes - np.array([dx, dy, dx, dy])) / scale
        ih, iw = image_bgr.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, iw)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, ih)
        idx = nms(boxes, scores, self.iou)[: self.max_detections]
        return [Detection(tuple(float(v) for v in boxes[i]), float(scores[i])) for i in idx]


class UltralyticsPlateDetector:
    """The same detector through ultralytics (a .pt or .onnx file); needs the `ultralytics` extra."""

    def __init__(
        self, path: str | Path | None = None, conf: float = 0.25, iou: float = 0.5, imgsz: int | None = None
    ) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise ModelLoadError(f"plate detector model not found: {self.path}")
        os.environ.setdefault("YOLO_OFFLINE", "1")
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise ModelLoadError(f"ultralytics backend needs the `ultralytics` extra: {exc}") from exc
        try:
            self.model = YOLO(str(self.path), task="detect")
        except Exception as exc:
            raise ModelLoadError(f"cannot load plate detector {self.path}: {exc}") from exc
        self.conf = conf
        self.iou = iou
        self.imgsz = imgsz

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        kwargs: dict[str, object] = {"conf": self.conf, "iou": self.iou, "verbose": False, "device": "cpu"}
        if self.imgsz:
            kwargs["imgsz"] = self.imgsz
        result = self.model.predict(image_bgr, **kwargs)[0]
        xyxy = result.boxes.xyxy.cpu().numpy()
        conf = result.boxes.conf.cpu().numpy()
        return [Detection(tuple(float(v) for v in b), float(s)) for b, s in zip(xyxy, conf, strict=True)]


def make_detector(
    name: str = "onnx", path: str | Path | None = None, **kwargs: object
) -> PlateDetector | None:
    """Build a detector by backend name (`onnx`, `ultralytics`; `none` gives None: the recogniser
    then relies on the OCR backend's text proposals alone)."""
    if name == "none":
        return None
    if name == "onnx":
        return OnnxPlateDetector(path, **kwargs)  # type: ignore[arg-type]
    if name == "ultralytics":
        return UltralyticsPlateDetector(path, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown detector backend {name!r}; choose from onnx, ultralytics, none")
