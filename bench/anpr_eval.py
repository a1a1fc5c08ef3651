"""Plate recognition on a labelled folder for every backend combination, as one table.

    python bench/anpr_eval.py [--dataset DIR[:split] ...] [--limit N] [--detector-path FILE]
                              [--ocr rapidocr,easyocr] [--detectors onnx,ultralytics,none]
                              [--baseline] [--json-out FILE]

`--baseline` adds the off-the-shelf pipeline for comparison: detector box -> one padded crop ->
the recogniser's plain best-path text (no formats, no crop variants, no text proposals).
Combinations whose backend is not installed (easyocr, ultralytics) are reported and skipped.
`--dataset` may be repeated (scene or crop folders, `DIR:split` as in `anpr.evaluate`); each row is
then the figures over all of them together (`anpr.evaluate.combine`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anpr.detector import PlateDetector  # noqa: E402
from anpr.evaluate import combine, evaluate, parse_dataset_spec  # noqa: E402
from anpr.ocr import OcrBackend  # noqa: E402
from anpr.recognizer import Timings, crop_box, make_recognizer  # noqa: E402
from anpr.types import PlateCandidate  # noqa: E402

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "plates-dev"
COLUMNS = (
    "images",
    "detection_recall",
    "detection_precision",
    "exact_plate_accuracy",
    "exact_plate_accuracy_o0",
    "char_accuracy",
    "ms_per_image",
    "detect_ms_per_image",
    "ocr_ms_per_image",
)


class PlainBaseline:
    """Detector crop -> plain OCR text: the reference the real recogniser must beat."""

    def __init__(self, detector: PlateDetector, ocr: OcrBackend, det_conf: float = 0.25) -> None:
        self.detector, self.ocr, self.det_conf = detector, ocr, det_conf
        self.last_timings = Timings()

    def recognize(self, image: np.ndarray) -> list[PlateCandidate]:
        from anpr.plates import normalize

        t0 = time.perf_counter()
        dets = [d for d in self.detector.detect(image) if d.score >= self.det_conf]
        t1 = time.perf_counter()
        out = []
        for d in dets:
            reads = self.ocr.read(crop_box(image, d.box, 0.05, 0.1))
            text = normalize(reads[0].text_raw) if reads else ""
            out.append(PlateCandidate(d.box, d.score, text or None, reads[0].confidence if reads else 0.0))
        self.last_timings = Timings(detect_ms=(t1 - t0) * 1000, ocr_ms=(time.perf_counter() - t1) * 1000)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", action="append", default=None, help="DIR or DIR:split; may be repeated")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--detector-path", type=Path, default=None)
    ap.add_argument("--ocr", default="rapidocr,easyocr")
    ap.add_argument("--detectors", default="onnx,ultralytics,none")
    ap.add_argument("--formats", default="eu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    datasets = [parse_dataset_spec(d) for d in (args.dataset or [str(DEFAULT_DATASET)])]

    def run(rec) -> dict:
        return combine([evaluate(p, rec, limit=args.limit, split=split) for p, split in datasets]).summary()

    rows: list[tuple[str, str, dict | str]] = []
    for ocr_name in args.ocr.split(","):
        for det_name in args.detectors.split(","):
            label = f"{det_name} + {ocr_name}"
            print(f"... {label}", file=sys.stderr, flush=True)
            try:
                rec = make_recognizer(
                    ocr=ocr_name,
                    detector=det_name,
                    detector_path=args.detector_path,
                    formats=args.formats,
                    threads=args.threads,
                )
            except Exception as exc:  # a missing optional backend is a row, not a crash
                rows.append((det_name, ocr_name, f"skipped: {exc}"))
                continue
            rows.append((det_name, ocr_name, run(rec)))
            if args.baseline and det_name != "none":
                base = PlainBaseline(rec.detector, rec.ocr)  # type: ignore[arg-type]
                rows.append((det_name, f"{ocr_name} (plain baseline)", run(base)))

    header = "| detector | ocr | " + " | ".join(COLUMNS) + " |"
    print(header)
    print("|" + " --- |" * (len(COLUMNS) + 2))
    for det_name, ocr_name, result in rows:
        if isinstance(result, str):
            print(f"| {det_name} | {ocr_name} | {result} |")
            continue
        cells = [
            (f"{result[c]:.0f}" if "ms" in c else f"{result[c]:.3f}")
            if isinstance(result[c], float)
            else str(result[c])
            for c in COLUMNS
        ]
        print(f"| {det_name} | {ocr_name} | " + " | ".join(cells) + " |")
    if args.json_out:
        args.json_out.write_text(json.dumps([{"detector": d, "ocr": o, "result": r} for d, o, r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
