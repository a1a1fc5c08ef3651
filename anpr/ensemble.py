"""One plate read from the trained plate recogniser, checked by a second reader, with a calibrated
confidence.

* The primary reader (`platerec`, trained on plates) reads the crop; its greedy text is the read. Regions
  (`anpr.regions`) may swap look-alikes toward a format, never change the length.
* A second, independent reader (RapidOCR's PP-OCR recogniser, trained on general text) reads the same
  crop. When the primary's text is one no plate of the region can be and the second's is, the second's
  text is taken. Agreement between the two is the strongest sign that a read is right. When they differ
  only in how often a doubled character appears, the primary decides (`drops_repeats`).
* The confidence is `P(read is exactly the plate)`: a logistic model over the read's sequence
  probability, its weakest character and the agreement of the two readers, fitted on validation
  reads (`baywarden anpr calibrate`, written to `anpr/weights/calibration.json`), never on the sets the
  figures are reported on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import cv2
import numpy as np

from anpr.ocr import OcrBackend, OcrLoadError, TextRead
from anpr.plates import PlateFormat, PlateRead, SkipPrior, normalize, score_texts
from anpr.regions import Region, RegionVerdict, apply_regions, apply_regions_exact, is_badge, lookalike_twin

DEFAULT_CALIBRATION = Path(__file__).parent / "weights" / "calibration.json"
FEATURES = ("ll_primary", "ll_second", "margin", "agree")
# A read no region accepts, or one a near-identical glyph away from another valid plate
# (`anpr.regions.lookalike_twin`), is never confident enough to skip review.
UNTRUSTED_CAP = 0.5
# Nor is a read of fewer characters: badges and stickers (SK, M5, VW) read as short texts, while
# plates that short are rare (10 of the 745 US crops, none in the BR and EU sets).
MIN_TRUSTED_LEN = 4
_FOLD = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "Z": "2", "S": "5", "B": "8", "G": "6"})


def fold_lookalikes(text: str) -> str:
    """The text with look-alike glyphs folded together (for "do two readers agree" only)."""
    return text.translate(_FOLD)


@dataclass(frozen=True)
class ReadEvidence:
    """What the confidence is computed from, kept for calibration and the reads log."""

    text: str
    raw_primary: str
    raw_second: str | None
    features: dict[str, float]
    char_confidences: tuple[float, ...]
    format_name: str | None
    trusted: bool = True  # a region accepts it and the trained reader made it
    # A region accepts it, it is long enough to be a plate and no badge word (`anpr.regions.is_badge`); it
    # may still have a look-alike twin.
    plate_like: bool = True


class Calibrator:
    """Logistic model of P(exact) over `FEATURES`; coefficients from a JSON file."""

    def __init__(self, coef: Sequence[float], intercept: float, meta: dict | None = None) -> None:
        if len(coef) != len(FEATURES):
            raise ValueError(f"calibration has {len(coef)} coefficients, expected {len(FEATURES)}")
        self.coef = np.asarray(coef, dtype=float)
        self.intercept = float(intercept)
        self.meta = meta or {}

    def __call__(self, features: dict[str, float]) -> float:
        x = np.array([features[k] for k in FEATURES], dtype=float)
        z = float(self.intercept + self.coef @ x)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    @classmethod
    def load(cls, path: Path | None = None) -> Calibrator:
        path = Path(path) if path is not None else DEFAULT_CALIBRATION
        try:
            data = json.loads(path.read_text())
            if data.get("features") != list(FEATURES):
                raise ValueError(f"features {data.get('features')} differ from {list(FEATURES)}")
            return cls(data["coef"], data["intercept"], data)
        except FileNotFoundError:
            raise OcrLoadError(f"confidence calibration not found: {path} (baywarden anpr calibrate)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OcrLoadError(f"cannot load confidence calibration {path}: {exc}") from None

    def save(self, path: Path, **meta: object) -> None:
        data = {"features": list(FEATURES), "coef": [round(float(c), 6) for c in self.coef],
                "intercept": round(self.intercept, 6), **meta}
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def fit(cls, rows: Sequence[dict[str, float]], exact: Sequence[bool], l2: float = 1.0) -> Calibrator:
        """Maximum-likelihood logistic regression with a small L2 penalty (Newton steps)."""
        x = np.array([[r[k] for k in FEATURES] for r in rows], dtype=float)
        y = np.asarray(exact, dtype=float)
        x1 = np.hstack([np.ones((len(x), 1)), x])
        w = np.zeros(x1.shape[1])
        reg = np.full(x1.shape[1], l2)
        reg[0] = 0.0  # the intercept is not shrunk
        for _ in range(100):
            p = 1.0 / (1.0 + np.exp(-np.clip(x1 @ w, -50, 50)))
            grad = x1.T @ (p - y) + reg * w
            hess = (x1 * (p * (1 - p))[:, None]).T @ x1 + np.diag(reg) + 1e-9 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(w[1:], w[0])


ANY_TEXT = PlateFormat("any", "A{1,12}")  # forced alignment of a fixed string, no format preference
# Forced alignment may pass over glyphs that are no plate characters (country band, sticker) at a
# cost, so one reader seeing a band letter the other does not see costs a few nats, not everything.
ALIGN_SKIP = SkipPrior(left=0.1, inner=0.05, right=0.05)
LL_FLOOR = -60.0


def _log_likelihoods(read: TextRead | None, texts: Sequence[str]) -> list[float]:
    """log P(text | this reader's posterior) for each text (forced CTC alignment), floored."""
    if read is None or read.ctc is None or not texts:
        return [LL_FLOOR] * len(texts)
    scored = score_texts(read.ctc, [(t, ANY_TEXT) for t in texts], ALIGN_SKIP)
    return [max(LL_FLOOR, r.score) if r is not None else LL_FLOOR for r in scored]


def _alnum_text(read: TextRead | None) -> str:
    if read is None:
        return ""
    if read.ctc is not None:
        return read.ctc.greedy()[0]
    return normalize(read.text_raw)


def _runs(text: str) -> list[tuple[str, int]]:
    return [(ch, len(list(group))) for ch, group in groupby(text)]


def drops_repeats(short: str, long: str) -> bool:
    """`short` is `long` with some doubled characters read once (LL33 for LLL333).

    A CTC reader emits a repeated character only with a blank frame between the two; a reader with
    coarse frames (RapidOCR's are 8 px wide) merges them, while inventing a repeat needs a whole extra
    blank and glyph. So between such a pair the longer text is the evidence, never the shorter."""
    a, b = _runs(short), _runs(long)
    return (
        len(short) < len(long)
        and len(a) == len(b)
        and all(ca == cb and na <= nb for (ca, na), (cb, nb) in zip(a, b, strict=True))
    )


def differ_in_round_glyphs_only(a: str, b: str) -> bool:
    """`a` and `b` differ only where one reads the letter O and the other the digit 0.

    The second reader is a general text reader: it tells O from 0 by the word around it (CUSTOM,
    GOLFING), while plate fonts draw the two alike and registrations mostly write 0 (US train crops:
    280 zeros, 13 O). The trained recogniser learnt the plates' convention, so between such a pair its
    posterior decides. Chosen on train splits: where the readers differed only so, the recogniser was
    right 17 times and RapidOCR never on plate-crops-us:train, 9 and 0 times on train-crop US scenes;
    swapping I/1, Z/2, S/5, B/8 or Q/D as well lost reads there."""
    return a != b and len(a) == len(b) and a.replace("O", "0") == b.replace("O", "0")


def combine(primary: TextRead | None, second: TextRead | None, regions: Sequence[Region]) -> ReadEvidence | None:
    """One read from the two readers' reads of the same crop, with the features of its confidence.

    Candidates are each reader's own text and its look-alike repair under the regions; each is scored
    by both readers' posteriors (forced alignment; a product of experts, equal weights) and the best
    one that a region accepts wins. A candidate is never shorter or longer than a reader's own text."""
    p_text, s_text = _alnum_text(primary), _alnum_text(second)
    raw = [t for t in dict.fromkeys((p_text, s_text)) if t]
    if not raw:
        return None
    # Each candidate is scored by the posteriors of the text it came from: a look-alike repair keeps
    # its source's likelihood and pays for each swap in its format prior (PlateFormat.fix).
    source: dict[str, str] = {}
    verdicts: dict[str, RegionVerdict] = {}
    for t in raw:
        verdicts[t], source[t] = apply_regions_exact(t, regions), t
        v = apply_regions(t, regions)
        if v.text not in verdicts:
            verdicts[v.text], source[v.text] = v, t
    texts = list(verdicts)
    sources = list(dict.fromkeys(source.values()))
    ll_p_src = dict(zip(sources, _log_likelihoods(primary, sources), strict=True))
    ll_s_src = dict(zip(sources, _log_likelihoods(second, sources), strict=True)) if second else {}
    ll_p = [ll_p_src[source[t]] for t in texts]
    ll_s = [ll_s_src[source[t]] for t in texts] if second is not None else [0.0] * len(texts)
    # Re-ranking by region: a text that fits a real format gets its format's prior over an arbitrary
    # string (the size principle); only the readers' own texts and their look-alike repairs compete.
    total = [a + b + verdicts[t].bonus for a, b, t in zip(ll_p, ll_s, texts, strict=True)]
    if drops_repeats(s_text, p_text) or drops_repeats(p_text, s_text) or differ_in_round_glyphs_only(p_text, s_text):
        # The readers differ only in how often a doubled character is read (the second reader's coarse
        # frames cannot tell, see drops_repeats) or in O against 0 (it decides by words, see
        # differ_in_round_glyphs_only): the primary's posterior alone decides.
        total = [a + verdicts[t].bonus for a, t in zip(ll_p, texts, strict=True)]
    order = sorted(range(len(texts)), key=lambda i: -total[i])
    accepted = [i for i in order if verdicts[texts[i]].accepted]
    best = accepted[0] if accepted else order[0]
    # How much better than the best reading of the other reader (its repairs are the same reading).
    runner_up = next((total[i] for i in order if source[texts[i]] != source[texts[best]]), None)
    if runner_up is not None:
        margin = min(30.0, total[best] - runner_up)
    elif second is not None and not (p_text and s_text):
        # One of the two readers saw no text at all: nothing confirms the other's read, so no margin.
        # (The widest margin here put a headlight the trained reader alone read as AAE86 at 0.90; no
        # calibration read has an empty reader, so the fitted model never learnt this case.)
        margin = 0.0
    else:
        margin = 30.0  # the readers agree, or there is no second reader: no other reading competes
    text = texts[best]
    # A car maker's name or badge word (CITROEN read by both readers at 0.99 off a car's tailgate) is no
    # plate either way, like a read too short to be one.
    plate_like = bool(accepted) and len(text) >= MIN_TRUSTED_LEN and not is_badge(text)
    confs = tuple(primary.char_confidences) if primary is not None and text == p_text else ()
    features = {
        "ll_primary": ll_p[best],
        "ll_second": ll_s[best] if second is not None else LL_FLOOR,
        "margin": margin,
        "agree": float(bool(p_text) and p_text == s_text),
    }
    return ReadEvidence(
        text=text,
        raw_primary=primary.text_raw if primary else "",
        raw_second=second.text_raw if second else None,
        features=features,
        char_confidences=confs,
        format_name=verdicts[text].format_name if verdicts[text].accepted else None,
        trusted=plate_like and lookalike_twin(text) is None,
        plate_like=plate_like,
    )


SECOND_MIN_HEIGHT = 48  # RapidOCR reads small crops better upscaled bicubically first (anpr.recognizer)


def _at_least(crop: np.ndarray, height: int) -> np.ndarray:
    h, w = crop.shape[:2]
    if h >= height or h == 0:
        return crop
    return cv2.resize(crop, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_CUBIC)


class EnsembleReader:
    """Reads one plate crop with the trained recogniser and a second reader (see module docstring)."""

    def __init__(
        self,
        primary: OcrBackend,
        second: OcrBackend | None,
        regions: Sequence[Region],
        calibrator: Calibrator | None,
    ) -> None:
        self.primary = primary
        self.second = second
        self.regions = tuple(regions)
        self.calibrator = calibrator
        self.last_evidence: ReadEvidence | None = None

    @property
    def name(self) -> str:
        return f"{self.primary.name}+{self.second.name}" if self.second else self.primary.name

    def evidence(self, crop: np.ndarray) -> ReadEvidence | None:
        p = self.primary.read(crop)
        s = self.second.read(_at_least(crop, SECOND_MIN_HEIGHT)) if self.second is not None else []
        best_p = max(p, key=lambda r: r.confidence) if p else None
        best_s = max(s, key=lambda r: r.confidence) if s else None
        if self.second is not None and best_s is None:
            best_s = TextRead("", 0.0)  # the second reader ran and saw nothing: that is evidence too
        return combine(best_p, best_s, self.regions)

    def confidence(self, ev: ReadEvidence, *, plate: bool = False) -> float:
        """The read's calibrated probability of being exact, capped below auto-accept when it is not
        trusted. `plate`: the same without the look-alike twin's cap, i.e. how sure the read is to be
        some plate's text at all (a twin is as much a plate as its read; `PlateRead.plate_confidence`)."""
        if self.calibrator is None:
            # Uncalibrated (tests, a fresh model): the read's own sequence probability, capped so
            # that nothing read this way skips operator review.
            return min(UNTRUSTED_CAP, math.exp(ev.features["ll_primary"]))
        p = self.calibrator(ev.features)
        return p if (ev.plate_like if plate else ev.trusted) else min(p, UNTRUSTED_CAP)

    def read_crop(self, crop: np.ndarray) -> PlateRead | None:
        ev = self.evidence(crop)
        self.last_evidence = ev
        if ev is None:
            return None
        conf = self.confidence(ev)
        # Per-character figures never claim more than the whole read's calibrated probability: the
        # per-visit vote (anpr.grouping) weighs positions by them.
        chars = tuple(min(c, conf) for c in ev.char_confidences) or (conf,) * len(ev.text)
        return PlateRead(
            text=ev.text,
            confidence=conf,
            format_name=ev.format_name,
            char_confidences=chars,
            raw_text=ev.raw_primary,
            score=math.log(max(conf, 1e-9)),
            plate_confidence=self.confidence(ev, plate=True),
        )
