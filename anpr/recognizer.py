"""Plate recogniser: detector boxes (plus whole-frame text proposals) -> crop variants -> OCR ->
format-aware choice.

What wins accuracy here, in order (measured on plates-dev, see bench/anpr_eval.py):

1. format-constrained CTC decoding (`anpr.plates.decode_ctc`): look-alikes resolved only where a
   country format says letter or digit, the EU band / coat of arms / stickers skipped as extra
   glyphs, a size-principle prior between formats;
2. growing the detector box to the text line it cuts (`PlateRecognizer.refine_box`): a clipped
   plate reads as a shorter string that often still fits a format;
3. the OCR backend's own whole-frame text detector as a second proposer when the plate detector
   finds nothing readable;
4. reading several crop variants and pooling them (`pool_reads`) - measured as no gain over the
   tight crop alone, so off by default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from anpr.detector import Detection, PlateDetector, detect_tiled
from anpr.ensemble import UNTRUSTED_CAP, EnsembleReader, fold_lookalikes
from anpr.ocr import BatchOcr, OcrBackend, TextBox, TextProposer, TextRead
from anpr.plates import (
    PlateFormat,
    PlateRead,
    choose_best,
    decode_ctc,
    get_formats,
    normalize,
    score_texts,
    template_for,
)
from anpr.types import PlateCandidate
from models.settings import DEFAULT_CONFIRMATION_THRESHOLD

Box = tuple[float, float, float, float]


# --- crop variants -------------------------------------------------------------------------------


def crop_box(image: np.ndarray, box: Box, pad_x: float = 0.0, pad_y: float = 0.0) -> np.ndarray:
    """Axis-aligned crop with padding given as a fraction of the box width/height."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    ih, iw = image.shape[:2]
    a = int(max(0, math.floor(x1 - pad_x * w)))
    b = int(max(0, math.floor(y1 - pad_y * h)))
    c = int(min(iw, math.ceil(x2 + pad_x * w)))
    d = int(min(ih, math.ceil(y2 + pad_y * h)))
    return image[b:d, a:c]


def _clahe(crop: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def _grey(crop: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


def estimate_skew(crop: np.ndarray, max_angle: float = 20.0) -> float:
    """Text angle in degrees (positive = clockwise slope), from the dominant near-horizontal edges.

    Uses the long horizontal structures of a plate (text baseline, plate border) found by a
    probabilistic Hough transform on the edge map; 0.0 when nothing convincing is found."""
    g = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    h, w = g.shape
    if h < 8 or w < 16:
        return 0.0
    scale = 200.0 / w if w > 0 else 1.0
    g = cv2.resize(g, (200, max(8, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    edges = cv2.Canny(g, 50, 150)
    lines = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=40, minLineLength=80, maxLineGap=8)
    if lines is None:
        return 0.0
    angles, weights = [], []
    for x1, y1, x2, y2 in np.asarray(lines).reshape(-1, 4):
        ang = math.degrees(math.atan2(y2 - y1, x2 - x1))
        if abs(ang) <= max_angle:
            angles.append(ang)
            weights.append(math.hypot(x2 - x1, y2 - y1))
    if not angles:
        return 0.0
    order = np.argsort(angles)
    cum = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(angles)[order][np.searchsorted(cum, cum[-1] / 2)])  # weighted median


def rotate(crop: np.ndarray, angle: float) -> np.ndarray:
    h, w = crop.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _trim_columns(line: np.ndarray) -> np.ndarray:
    """Cut blank margins left and right of a text line (columns without dark ink)."""
    grey = cv2.cvtColor(line, cv2.COLOR_BGR2GRAY)
    _, ink = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    band = ink[int(ink.shape[0] * 0.2) : max(int(ink.shape[0] * 0.8), 1)]
    cols = np.flatnonzero(band.mean(0) > 12)  # ~5 % of the band's rows carry ink
    if cols.size < 4:
        return line
    margin = max(2, line.shape[0] // 6)
    return line[:, max(0, cols[0] - margin) : min(line.shape[1], cols[-1] + 1 + margin)]


def split_two_lines(crop: np.ndarray) -> np.ndarray | None:
    """For a square-ish (two-line) plate, put the lower line to the right of the upper one.

    The cut is the row with the least dark ink between 30 % and 70 % of the height; each line is
    trimmed to its ink before the two are joined at a common height."""
    h, w = crop.shape[:2]
    if h < 16 or w / h > 2.5:
        return None
    g = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    profile = binary.mean(1)
    lo, hi = int(h * 0.3), int(h * 0.7)
    cut = lo + int(np.argmin(profile[lo:hi]))
    top, bottom = crop[:cut], crop[cut:]
    if top.shape[0] < 6 or bottom.shape[0] < 6:
        return None
    top, bottom = _trim_columns(top), _trim_columns(bottom)
    th = max(top.shape[0], bottom.shape[0])
    top = cv2.resize(top, (max(1, round(top.shape[1] * th / top.shape[0])), th))
    bottom = cv2.resize(bottom, (max(1, round(bottom.shape[1] * th / bottom.shape[0])), th))
    gap = np.full((th, max(2, th // 3), 3), np.median(crop.reshape(-1, 3), axis=0), np.uint8)
    return np.hstack([top, gap, bottom])


def strip_eu_band(crop: np.ndarray) -> np.ndarray | None:
    """Cut off the blue country band at the left of an EU plate, or None if there is none.

    Recognisers read the band's country code or stars as an extra letter (often E, I or D). Kept
    as an opt-in crop variant ("no_band"): measured on plates-dev it did not help either backend,
    since the format decoder already skips the band as an extra glyph."""
    h, w = crop.shape[:2]
    if h < 8 or w < 4 * h // 2:
        return None
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    blue = (hsv[:, :, 0] >= 95) & (hsv[:, :, 0] <= 135) & (hsv[:, :, 1] >= 60) & (hsv[:, :, 2] >= 30)
    frac = blue.mean(0)
    limit = max(3, int(w * 0.25))
    cols = np.flatnonzero(frac[:limit] > 0.4)  # a band column is blue over most of its height
    if cols.size < max(2, int(w * 0.03)) or cols[0] > w * 0.15:
        return None
    cut = int(cols[-1] + 1)
    return crop[:, cut:] if w - cut > 2 * h else None


def shrink_box(box: Box, share: float) -> Box:
    """`box` with `share` of its height cut from its top and from its bottom (width kept)."""
    x1, y1, x2, y2 = box
    cut = share * (y2 - y1)
    return (x1, y1 + cut, x2, y2 - cut)


def upscale(crop: np.ndarray, height: int) -> np.ndarray:
    """Bicubic resize to a fixed height: small crops keep sharper strokes than the recogniser's
    own bilinear resize gives them."""
    h, w = crop.shape[:2]
    if h >= height or h == 0:
        return crop
    return cv2.resize(crop, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_CUBIC)


CropVariant = Callable[[np.ndarray, Box], "np.ndarray | None"]


def _v_pad(image: np.ndarray, box: Box) -> np.ndarray:
    return crop_box(image, box, 0.06, 0.12)


def _v_tight(image: np.ndarray, box: Box) -> np.ndarray:
    return crop_box(image, box, 0.02, 0.04)


def _v_wide(image: np.ndarray, box: Box) -> np.ndarray:
    return crop_box(image, box, 0.12, 0.3)


def _v_clahe(image: np.ndarray, box: Box) -> np.ndarray:
    return _clahe(crop_box(image, box, 0.06, 0.12))


def _v_grey(image: np.ndarray, box: Box) -> np.ndarray:
    return _grey(crop_box(image, box, 0.06, 0.12))


def _v_deskew(image: np.ndarray, box: Box) -> np.ndarray | None:
    wide = crop_box(image, box, 0.06, 0.3)
    angle = estimate_skew(wide)
    if abs(angle) < 1.5:
        return None  # the straight crops already cover it
    turned = rotate(wide, angle)
    h = wide.shape[0]
    keep = (0.3 / 1.6) * h  # trim back the extra vertical padding taken for the rotation
    return turned[int(keep * 0.5) : int(h - keep * 0.5)]


def _v_no_band(image: np.ndarray, box: Box) -> np.ndarray | None:
    return strip_eu_band(crop_box(image, box, 0.02, 0.04))


def _v_two_line(image: np.ndarray, box: Box) -> np.ndarray | None:
    return split_two_lines(crop_box(image, box, 0.04, 0.06))


CROP_VARIANTS: dict[str, CropVariant] = {
    "pad": _v_pad,
    "tight": _v_tight,
    "wide": _v_wide,
    "clahe": _v_clahe,
    "grey": _v_grey,
    "deskew": _v_deskew,
    "no_band": _v_no_band,
    "two_line": _v_two_line,
}
VARIANT_LAYOUT = {"two_line": "two_line"}  # every other variant reads the crop as one line

# Measured on plates-dev (ground-truth, jittered and four detector snapshots' boxes): the tight
# crop alone reads as well as any pooled mix of tight/pad/grey/CLAHE/band-stripped crops (always
# within one plate of 108, either way), so the default reads one crop; the rotated and two-line
# crops only exist when a crop needs them (tilted or square plate). Add variants to pool more looks.
DEFAULT_VARIANTS = ("tight", "deskew", "two_line")


# --- pooling reads --------------------------------------------------------------------------------


def pool_reads(
    reads: Sequence[TextRead], formats: Sequence[PlateFormat], per_read: int = 4
) -> PlateRead | None:
    """One plate text from the reads of several crop variants of the same plate.

    With CTC posteriors: each read proposes its best strings (one per format, `per_read` best);
    every proposal is then scored under every read's posterior (forced alignment) and the scores
    are averaged - crops of one photo are far from independent looks, so summing would count the
    same evidence several times and drown the format prior - and the prior is added once.
    Without posteriors, strings are format-repaired and their confidences pooled (`choose_best`)."""
    with_ctc = [r for r in reads if r.ctc is not None]
    if not with_ctc:
        return choose_best([(r.text_raw, r.confidence) for r in reads], formats)
    if len(with_ctc) == 1:  # one look: its own best decode is the answer, no re-scoring needed
        assert with_ctc[0].ctc is not None
        options = decode_ctc(with_ctc[0].ctc, formats)
        if not options:
            return None
        best = options[0]
        return PlateRead(
            best.text,
            best.confidence,
            best.format_name,
            best.char_confidences,
            with_ctc[0].text_raw,
            best.score,
        )
    by_name = {f.name: f for f in formats}
    proposals: dict[tuple[str, str], tuple[float, str]] = {}  # (text, format) -> (prior, raw text)
    for read in with_ctc:
        assert read.ctc is not None
        for option in decode_ctc(read.ctc, formats)[:per_read]:
            fmt = by_name[option.format_name or ""]
            found = template_for(option.text, fmt)
            if found is not None:
                proposals.setdefault((option.text, fmt.name), (found[1], read.text_raw))
    if not proposals:
        return None
    keys = list(proposals)
    hyps = [(text, by_name[name]) for text, name in keys]
    prior = np.array([proposals[k][0] for k in keys])
    total = np.zeros(len(keys))
    conf_sum = np.zeros(len(keys))
    best_path: list[PlateRead | None] = [None] * len(keys)
    for read in with_ctc:
        assert read.ctc is not None
        for i, scored in enumerate(score_texts(read.ctc, hyps)):
            if scored is None:
                total[i] += NEG_SCORE
                continue
            total[i] += scored.score
            conf_sum[i] += scored.confidence
            if best_path[i] is None or scored.score > best_path[i].score:
                best_path[i] = scored
    total = total / len(with_ctc) + prior
    i = int(total.argmax())
    text, name = keys[i]
    path = best_path[i]
    if path is None:
        return None
    return PlateRead(
        text=text,
        confidence=float(conf_sum[i] / len(with_ctc)),
        format_name=name,
        char_confidences=path.char_confidences,
        raw_text=proposals[keys[i]][1],
        score=float(total[i]),
        votes=len(with_ctc),
    )


NEG_SCORE = -100.0  # a proposal that one crop cannot explain at all


# --- the recogniser --------------------------------------------------------------------------------


@dataclass
class Timings:
    """Where the last `recognize` call spent its time."""

    detect_ms: float = 0.0  # plate detector + growing boxes to the text + whole-frame text proposals
    ocr_ms: float = 0.0  # cropping, recognising and decoding
    proposals: int = 0  # plate-shaped text lines the whole-frame text detector offered


@dataclass
class PlateRecognizer:
    """Finds and reads plates in a frame (implements `anpr.types.Recognizer`).

    Detections scoring at least `accept_conf` are returned whatever their text; weaker ones (down
    to `det_conf`) only when their read fits a real (non-generic) format - the reader verifies
    what the detector is unsure of, which buys recall without flooding false boxes. Reads of such
    weak boxes and of text proposals are kept below auto-accept (`UNTRUSTED_CAP`): the read that
    made them plates cannot also vouch for itself.

    `text_proposals`: "fallback" runs the OCR backend's whole-frame text detector only when the
    plate detector gave no readable plate (catches its misses); "always" runs it on every frame;
    "off" never. A proposal is kept when its text fits a real format (confidence >=
    `proposal_min_confidence`) or, fitting only the generic shape, is read with confidence >=
    `proposal_generic_confidence`. Detection boxes are grown to the text line they cut
    (`refine_box`) when `refine_boxes` and the backend has a text detector.
    """

    detector: PlateDetector | None
    ocr: OcrBackend
    formats: Sequence[PlateFormat] | str = "eu"
    proposer: TextProposer | None = None  # whole-frame text detector; default: the OCR backend's
    variants: Sequence[str] = DEFAULT_VARIANTS
    det_conf: float = 0.1
    accept_conf: float = 0.35
    max_plates: int = 5
    text_proposals: str = "fallback"
    refine_boxes: bool = True
    min_text_len: int = 4
    proposal_min_confidence: float = 0.6
    proposal_generic_confidence: float = 0.95  # text in no known format: signs, badges... be strict
    # Share of a detection box's height cut from its top and from its bottom before the box is grown
    # to the text line it cuts (`refine_box`). The detector's boxes run loose vertically on small
    # plates (trained on loosely boxed sets); the trained reader reads tighter crops better.
    box_shrink: float = 0.0
    # "fallback": when the whole frame gave no verified plate, the detector looks again at overlapping
    # windows of the frame at a larger scale (`anpr.detector.tiles`): small plates it missed at the
    # frame's scale. "always" / "off" as for text proposals.
    tiles: str = "off"
    # The trained plate recogniser with a second reader and calibrated confidence (`anpr.ensemble`):
    # when set, crops are read by it instead of the CTC format decoder, and regions replace formats.
    reader: EnsembleReader | None = None
    # With `reader`: a read that may skip operator review (the default confirmation threshold) is read
    # again from a wider cut (`_second_look`); 1.0: never. A site that lowers its threshold should lower
    # this with it (`anpr.second_look_above`; about 27 ms per read looked at again).
    second_look_above: float = DEFAULT_CONFIRMATION_THRESHOLD
    last_timings: Timings = field(default_factory=Timings, init=False)

    def __post_init__(self) -> None:
        if self.proposer is None and isinstance(self.ocr, TextProposer):
            self.proposer = self.ocr
        self.formats = get_formats(self.formats) if isinstance(self.formats, str) else tuple(self.formats)
        unknown = [v for v in self.variants if v not in CROP_VARIANTS]
        if unknown:
            raise ValueError(f"unknown crop variants {unknown}; known: {', '.join(CROP_VARIANTS)}")
        if self.text_proposals not in ("fallback", "always", "off"):
            raise ValueError("text_proposals must be 'fallback', 'always' or 'off'")
        if self.tiles not in ("fallback", "always", "off"):
            raise ValueError("tiles must be 'fallback', 'always' or 'off'")

    # public API ---------------------------------------------------------------------------------
    def recognize(self, image: np.ndarray) -> list[PlateCandidate]:
        timings = Timings()
        t0 = time.perf_counter()
        detections = self.detector.detect(image) if self.detector is not None else []
        detections = sorted((d for d in detections if d.score >= self.det_conf), key=lambda d: -d.score)
        timings.detect_ms += (time.perf_counter() - t0) * 1000

        det_boxes: dict[Box, Box] = {}
        weak: list[PlateCandidate] = []  # reads too unsure to be plates, still looks at one (_suppress_overlaps)
        candidates = self._read_detections(image, detections, [], timings, det_boxes, weak)
        want_tiles = self.tiles == "always" or (
            self.tiles == "fallback" and not any(self._verified(c) for c in candidates)
        )
        tiled = want_tiles and self.detector is not None and _tiling_helps(self.detector, image)
        if tiled:
            assert self.detector is not None
            t0 = time.perf_counter()
            more = [d for d in detect_tiled(self.detector, image) if d.score >= self.det_conf]
            timings.detect_ms += (time.perf_counter() - t0) * 1000
            more = [d for d in more if not any(iou(d.box, c.box) > 0.3 for c in candidates)]
            candidates = candidates + self._read_detections(image, more, candidates, timings, det_boxes, weak)

        # The whole-frame text detector is the fallback of frames too small for windows (and of a
        # recogniser without a detector): where windows ran they found what it found (train-split US
        # scenes and plates-train:val read the same with or without it after the windows, 70-85 ms per
        # image less; on 640 px frames, after the windows, it found no further plate and cost precision).
        want_proposals = self.text_proposals == "always" or (
            self.text_proposals == "fallback" and not tiled and not any(self._verified(c) for c in candidates)
        )
        if want_proposals and self.proposer is not None:
            candidates.extend(self._from_text_proposals(image, candidates, timings))
        # A box the detector is unsure of (below `accept_conf`; a text proposal has no box at all) is a
        # plate only because its read says so, and that read cannot also vouch for itself enough to skip
        # review: badges and signs read cleanly (CITROEN at 0.99 from a 0.15 box in a 1600x900 scene,
        # WASHINGTON from a proposal).
        kept = [c if c.det_confidence >= self.accept_conf else _contested(c)
                for c in _suppress_overlaps(candidates, weak)]
        if self.reader is not None:
            t0 = time.perf_counter()
            kept = [self._second_look(image, c) for c in kept]
            timings.ocr_ms += (time.perf_counter() - t0) * 1000
        self.last_timings = timings
        return [_plate_extent(c, det_boxes) for c in kept]

    def _read_detections(
        self, image: np.ndarray, detections: Sequence[Detection], existing: Sequence[PlateCandidate],
        timings: Timings, det_boxes: dict[Box, Box], weak: list[PlateCandidate] | None = None,
    ) -> list[PlateCandidate]:
        t0 = time.perf_counter()
        candidates: list[PlateCandidate] = []
        for det in sorted(detections, key=lambda d: -d.score)[: max(0, self.max_plates - len(existing))]:
            t1 = time.perf_counter()
            box = shrink_box(det.box, self.box_shrink) if self.box_shrink else det.box
            box = self.refine_box(image, box) if self.refine_boxes else box
            refine_ms = (time.perf_counter() - t1) * 1000
            timings.detect_ms += refine_ms
            timings.ocr_ms -= refine_ms
            cand = self._candidate(box, det.score, self.read_box(image, box))
            det_boxes[cand.box] = det.box
            if det.score >= self.accept_conf or self._verified(cand):
                candidates.append(cand)
            elif weak is not None and cand.text:
                weak.append(cand)
        timings.ocr_ms += (time.perf_counter() - t0) * 1000
        return candidates

    def _second_look(self, image: np.ndarray, c: PlateCandidate) -> PlateCandidate:
        """A read that may skip review is looked at again: the trained reader reads a wider cut, the
        plate with its frame and the car around it. When it reads a look-alike glyph differently there
        (2CZ3587 against ZCZ3587: an Idaho county prefix read as Z from the plate's own box), the reader
        cannot tell that glyph at this size, and the read stays below auto-accept (`_contested`)."""
        if self.reader is None or not c.text or c.confidence < self.second_look_above:
            return c
        ih, iw = image.shape[:2]
        x1, y1, x2, y2 = c.box
        w, h = x2 - x1, y2 - y1
        wider = (max(0.0, x1 - 0.2 * w), max(0.0, y1 - 0.3 * h), min(float(iw), x2 + 0.2 * w),
                 min(float(ih), y2 + 0.3 * h))
        crop = CROP_VARIANTS[self.variants[0]](image, wider)
        reads = self.reader.primary.read(crop) if crop is not None and crop.size else []
        text = normalize(max(reads, key=lambda r: r.confidence).text) if reads else ""
        return _contested(c) if _lookalike_rival(c.text, [text]) else c

    def refine_box(self, image: np.ndarray, box: Box, rounds: int = 3) -> Box:
        """Grow a detection box to the text line it cuts through.

        A box that clips the first or last characters reads as a shorter string that may still fit
        a format (DE accepts almost any truncation), so the recogniser cannot notice by itself. The
        OCR backend's text detector, run on a region around the box, shows where the line ends;
        repeated while the box keeps growing, since a line may run past the first region."""
        if self.proposer is None:
            return box
        for _ in range(rounds):
            grown = self._grow_to_text(image, box)
            still_growing = (grown[2] - grown[0]) > 1.05 * (box[2] - box[0]) or (
                grown[3] - grown[1]
            ) > 1.05 * (box[3] - box[1])
            box = grown
            if not still_growing:
                break
        return box

    def _grow_to_text(self, image: np.ndarray, box: Box) -> Box:
        assert self.proposer is not None
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        ih, iw = image.shape[:2]
        rx1, ry1 = int(max(0, x1 - 0.3 * w)), int(max(0, y1 - 0.4 * h))
        rx2, ry2 = int(min(iw, x2 + 0.3 * w)), int(min(ih, y2 + 0.4 * h))
        region = image[ry1:ry2, rx1:rx2]
        if region.size == 0 or h < 4:
            return box
        # scale so that the plate's text is ~25-40 px high for the text detector
        lines = self.proposer.detect_text(
            region, min_side=int(np.clip(160 * (ry2 - ry1) / (1.8 * h), 96, 320))
        )
        same_line = []
        for tb in lines:
            lx1, ly1, lx2, ly2 = tb.box
            lx1, lx2, ly1, ly2 = lx1 + rx1, lx2 + rx1, ly1 + ry1, ly2 + ry1
            v_overlap = min(ly2, y2) - max(ly1, y1)
            h_overlap = min(lx2, x2) - max(lx1, x1)
            if v_overlap >= 0.5 * min(ly2 - ly1, h) and h_overlap > 0 and (ly2 - ly1) <= 1.5 * h:
                same_line.append((lx1, ly1, lx2, ly2))
        if not same_line:
            return box
        tx1 = min(b[0] for b in same_line) - 0.03 * w
        tx2 = max(b[2] for b in same_line) + 0.03 * w
        ty1 = min(b[1] for b in same_line)
        ty2 = max(b[3] for b in same_line)
        return (
            float(max(rx1, min(x1, tx1))),
            float(max(ry1, min(y1, ty1))),
            float(min(rx2, max(x2, tx2))),
            float(min(ry2, max(y2, ty2))),
        )

    def read_box(self, image: np.ndarray, box: Box) -> PlateRead | None:
        """Read the plate in `box` (frame pixels) from several crop variants.

        Variants of one layout (one line; two lines side by side) are pooled together, and the
        layout whose pooled read fits a format and is most confident wins: averaging a garbled
        one-line read of a two-line plate into the good read would spoil it."""
        groups: dict[str, list[np.ndarray]] = {}
        for name in self.variants:
            crop = CROP_VARIANTS[name](image, box)
            if crop is not None and crop.size:
                groups.setdefault(VARIANT_LAYOUT.get(name, "one_line"), []).append(crop)
        return self._read_groups(list(groups.values()))

    def read_crops(self, crops: Sequence[np.ndarray]) -> PlateRead | None:
        """Read one plate from crops of the same layout (pooled)."""
        return self._read_groups([list(crops)])

    def _read_groups(self, groups: Sequence[Sequence[np.ndarray]]) -> PlateRead | None:
        if self.reader is not None:
            # The trained recogniser joins two-line plates itself: one-line crops only, best read wins.
            crops = [c for c in groups[0] if c is not None and c.size] if groups else []
            reads = [r for r in (self.reader.read_crop(c) for c in crops) if r is not None]
            return max(reads, key=lambda r: r.confidence) if reads else None
        groups = [[upscale(c, 48) for c in g if min(c.shape[:2]) >= 4] for g in groups]
        flat = [c for g in groups for c in g]
        if not flat:
            return None
        per_crop = (
            self.ocr.read_many(flat) if isinstance(self.ocr, BatchOcr) else [self.ocr.read(c) for c in flat]
        )
        best: PlateRead | None = None
        start = 0
        for group in groups:
            reads = [r for rs in per_crop[start : start + len(group)] for r in rs]
            start += len(group)
            result = pool_reads(reads, self.formats) if reads else None
            if result is None or len(result.text) < self.min_text_len:
                continue
            if best is None or _layout_key(result) > _layout_key(best):
                best = result
        return best

    # internals ----------------------------------------------------------------------------------

    def _verified(self, c: PlateCandidate) -> bool:
        """The read confirms there is a plate: it fits a real format (format decoders), or (ensemble)
        a region accepts it and it is read with some confidence."""
        if self.reader is None:
            return _formatted(c)
        sure = c.confidence if c.plate_confidence is None else c.plate_confidence
        return bool(c.text) and c.format_name is not None and sure >= self.proposal_min_confidence

    @staticmethod
    def _candidate(box: Box, det_conf: float, read: PlateRead | None) -> PlateCandidate:
        if read is None:
            return PlateCandidate(box=box, det_confidence=det_conf, text=None, confidence=0.0)
        return PlateCandidate(
            box=tuple(float(v) for v in box),
            det_confidence=float(det_conf),
            text=read.text,
            confidence=float(read.confidence),
            char_confidences=read.char_confidences,
            format_name=read.format_name,
            raw_text=read.raw_text,
            plate_confidence=read.plate_confidence,
        )

    def _from_text_proposals(
        self, image: np.ndarray, existing: Sequence[PlateCandidate], timings: Timings
    ) -> list[PlateCandidate]:
        t0 = time.perf_counter()
        assert self.proposer is not None
        boxes = [b for b in self.proposer.detect_text(image) if _plate_like(b)]
        timings.detect_ms += (time.perf_counter() - t0) * 1000
        timings.proposals = len(boxes)
        t0 = time.perf_counter()
        found: list[PlateCandidate] = []
        for tb in boxes:
            box = plate_box_from_text(tb, image.shape)
            if any(iou(box, c.box) > 0.3 and c.text for c in [*existing, *found]):
                continue
            read = self.read_box(image, box)
            if read is None or read.format_name is None:
                continue
            generic = read.format_name == "generic"
            if read.confidence < (
                self.proposal_generic_confidence if generic else self.proposal_min_confidence
            ):
                continue
            found.append(self._candidate(box, 0.0, read))
        timings.ocr_ms += (time.perf_counter() - t0) * 1000
        return found


# Windows look closer at every frame the whole-frame pass shrank on its way into the detector: they
# undo that shrinking (a 640x480 frame or camera ROI enters the 512 square at 0.8x, its 2/3 windows at
# 1.2x). Frames at or below the input's size are not blown up further. Until 2026-12-07 only frames
# shrunk below 0.6x (`anpr.detector.RECT_BELOW`) had windows, smaller ones the whole-frame text
# proposals, which find fewer plates there, more slowly (weights README, "Windows on small frames").
WINDOWS_BELOW = 1.0


def _tiling_helps(detector: PlateDetector, image: np.ndarray) -> bool:
    """Whether the whole frame entered the detector at under `WINDOWS_BELOW` (so windows see it larger)."""
    scale_for = getattr(detector, "scale_for", None)
    if scale_for is not None:
        return scale_for(image.shape) < WINDOWS_BELOW
    side = min(getattr(detector, "input_size", (640, 640)))
    return side / max(image.shape[:2]) < WINDOWS_BELOW


def _formatted(c: PlateCandidate) -> bool:
    return bool(c.text) and c.format_name not in (None, "generic")


def _rank(c: PlateCandidate) -> tuple[bool, bool, float]:
    return (_formatted(c), c.text is not None, max(c.det_confidence, 0.05) * max(c.confidence, 0.05))


def _suppress_overlaps(
    candidates: Sequence[PlateCandidate], weak: Sequence[PlateCandidate] = ()
) -> list[PlateCandidate]:
    """Best first; drop a candidate that mostly lies on a better one (two plates never overlap,
    but a detector may box one plate twice, or half of it). When the dropped one read a longer
    text that contains the kept one's, it saw more of the plate: it takes the place instead. When
    both read the same text, the smaller box places the plate better (the larger one also holds the
    plate holder or bumper around it): the kept read moves to the smaller box, its score unchanged.
    A box at most half as wide that read at least as many characters takes the place of a wide one
    (`_denser`). When another look at the same plate (an overlapping candidate, or a `weak` read not taken as a
    plate) read the same characters but for a look-alike glyph (2CZ3587 against ZCZ3587), the reader
    cannot tell that glyph here: the kept read is capped below auto-accept (`_contested`)."""
    kept: list[PlateCandidate] = []
    rivals: list[list[str]] = []
    for c in sorted(candidates, key=_rank, reverse=True):
        clash = next((i for i, k in enumerate(kept) if _overlap_of_smaller(c.box, k.box) >= 0.5), None)
        if clash is None:
            kept.append(c)
            rivals.append([])
            continue
        k = kept[clash]
        if c.text:
            rivals[clash].append(c.text)
        if c.text and k.text and c.text != k.text and len(c.text) >= len(k.text) and (
            _denser(c, k) or (len(c.text) > len(k.text) and k.text in c.text and _widths_fit(c, k))
        ):
            kept[clash] = c
            rivals[clash].append(k.text)
        elif c.text and c.text == k.text and _area(c.box) < _area(k.box):
            kept[clash] = replace(k, box=c.box)
    for i, k in enumerate(kept):
        rivals[i].extend(w.text for w in weak if w.text and _overlap_of_smaller(w.box, k.box) >= 0.5)
    return [_contested(k) if _lookalike_rival(k.text, r) else k for k, r in zip(kept, rivals, strict=True)]


def _lookalike_rival(text: str | None, others: Sequence[str]) -> bool:
    """Another read of the same plate differs from `text` only in near-identical glyphs."""
    if not text:
        return False
    folded = fold_lookalikes(text)
    return any(o != text and len(o) == len(text) and fold_lookalikes(o) == folded for o in others)


def _contested(c: PlateCandidate) -> PlateCandidate:
    cap = UNTRUSTED_CAP
    chars = tuple(min(x, cap) for x in c.char_confidences)
    return replace(c, confidence=min(c.confidence, cap), char_confidences=chars)


def _denser(longer: PlateCandidate, shorter: PlateCandidate) -> bool:
    """The longer (or as long) read comes from a box at most half as wide: a box several plates wide
    (bumper, plate holder, a car's rear) that reads no more characters than the plate's own box did
    not read the plate's characters (4T88 over L824788; AZ4A1 over 71227 in a 1600x900 scene)."""
    return (longer.box[2] - longer.box[0]) * 2 <= shorter.box[2] - shorter.box[0]


def _widths_fit(longer: PlateCandidate, shorter: PlateCandidate) -> bool:
    """The longer read's extra characters account for its extra width: a box half a plate wide reads
    half the text, while a box three times the plate's width that reads one character more took that
    character from the bumper or the plate holder around it."""
    ratio = (longer.box[2] - longer.box[0]) / max(shorter.box[2] - shorter.box[0], 1e-6)
    return ratio <= 1.5 * len(longer.text or "") / max(len(shorter.text or ""), 1)


def _plate_extent(c: PlateCandidate, det_boxes: dict[Box, Box]) -> PlateCandidate:
    """The box a candidate reports as its plate. Reading uses the detection cut to the text
    (`box_shrink`, `refine_box`); the plate reaches further, above and below its text: half of what
    the cut took off the detector's box is given back (chosen on the val splits: plates-train-extra
    detection recall 0.51 -> 0.61 at IoU 0.5, plates-train 0.936 -> 0.949; the detector's whole
    height, which it draws too tall on US plates, lost train-crop US scenes 0.985 -> 0.96)."""
    det = det_boxes.get(c.box)
    if det is None:
        return c
    x1, y1, x2, y2 = c.box
    return replace(c, box=(x1, min(y1, (y1 + det[1]) / 2), x2, max(y2, (y2 + det[3]) / 2)))


def _area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _overlap_of_smaller(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def _layout_key(read: PlateRead) -> tuple[bool, float]:
    """Across layouts the path scores are not comparable (different crops, lengths): prefer a read
    that fits a real format, then the more confident one."""
    return (read.format_name not in (None, "generic"), read.confidence)


def _plate_like(tb: TextBox) -> bool:
    x1, y1, x2, y2 = tb.box
    w, h = x2 - x1, y2 - y1
    return h >= 8 and w >= 24 and 1.5 <= w / max(h, 1e-6) <= 12


def plate_box_from_text(tb: TextBox, shape: tuple[int, ...]) -> Box:
    """A text line's box grown to roughly the plate around it (plates have margins and often a
    country band left of the characters)."""
    x1, y1, x2, y2 = tb.box
    w, h = x2 - x1, y2 - y1
    ih, iw = shape[:2]
    return (
        max(0.0, x1 - 0.08 * w),
        max(0.0, y1 - 0.15 * h),
        min(float(iw), x2 + 0.04 * w),
        min(float(ih), y2 + 0.15 * h),
    )


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_recognizer(
    ocr: str = "rapidocr",
    detector: str | None = "onnx",
    detector_path: str | Path | None = None,
    formats: str | Sequence[PlateFormat] = "eu",
    threads: int | None = None,
    proposer: str = "rapidocr",
    region: str | Sequence[str] | None = None,
    calibration: str | Path | None = None,
    recognizer_path: str | Path | None = None,
    **kwargs: object,
) -> PlateRecognizer:
    """A recogniser from backend names (what the CLI and the benchmark use).

    `detector="none"` runs without a plate detector: only whole-frame text proposals are used (no
    model file needed; slower and less precise, and no read skips review: see `recognize`). `proposer`
    picks the text detector used for those proposals and for growing clipped boxes: `rapidocr` (DBNet,
    fast; the default for every OCR backend), `ocr` (the OCR backend's own, e.g. EasyOCR's CRAFT, ~10x
    slower on CPU) or `none`. `recognizer_path`: the `platerec` model instead of the committed one."""
    from anpr.detector import make_detector
    from anpr.ocr import RapidOcrBackend, default_threads, make_ocr

    threads = default_threads() if threads is None else threads
    det = None
    if detector not in (None, "none"):
        det_kwargs: dict[str, object] = {"threads": threads} if detector == "onnx" and threads else {}
        det_kwargs["conf"] = float(kwargs.get("det_conf", PlateRecognizer.det_conf))  # type: ignore[arg-type]
        det = make_detector(detector, detector_path, **det_kwargs)
    ensemble = None
    rec_kwargs: dict[str, object] = {"model_path": recognizer_path} if recognizer_path is not None else {}
    if rec_kwargs and ocr not in ("ensemble", "platerec"):
        raise ValueError(f"a recogniser model is for the ensemble or platerec backends (not {ocr})")
    if ocr == "ensemble":
        from anpr.ensemble import Calibrator
        from anpr.regions import get_regions

        rapid = RapidOcrBackend(threads=threads)
        ensemble = EnsembleReader(
            make_ocr("platerec", threads=threads, **rec_kwargs), rapid, get_regions(region or "generic"),
            Calibrator.load(calibration),
        )
        reader: OcrBackend = rapid
        kwargs.setdefault("variants", ("tight",))
        # Chosen on scenes carrying train-split US crops (bench/us_scenes.py --split train) and
        # plates-train:val: 0.2 read 0.88 / 1.00 of matched plates there against 0.75 / 0.91 uncut.
        kwargs.setdefault("box_shrink", 0.2)
        kwargs.setdefault("tiles", "fallback")
    else:
        reader = make_ocr(ocr, threads=threads, **rec_kwargs)
    text_detector: TextProposer | None
    if proposer == "rapidocr":
        text_detector = reader if isinstance(reader, RapidOcrBackend) else RapidOcrBackend(threads=threads)
    elif proposer == "ocr":
        text_detector = reader if isinstance(reader, TextProposer) else None
    elif proposer == "none":
        text_detector = None
    else:
        raise ValueError(f"unknown proposer {proposer!r}; choose from rapidocr, ocr, none")
    rec = PlateRecognizer(det, reader, formats, text_detector, reader=ensemble, **kwargs)  # type: ignore[arg-type]
    if text_detector is None:
        rec.proposer = None  # explicit "none": do not fall back to the OCR backend's detector
    return rec
