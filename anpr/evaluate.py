"""Evaluate a plate recogniser on a labelled folder (`labels.jsonl`, see shared/datasets/README.md).

Figures (all plates of all images count):

* detection recall / precision: a labelled plate is found when a returned candidate overlaps it
  with IoU >= 0.5 (one candidate per plate, greedy by IoU); precision is over every returned box;
* exact plate accuracy: the text of the plate's matched candidate equals the label after
  normalisation to A-Z0-9; a missed or unread plate counts as wrong;
* char accuracy: mean over plates of 1 - normalised Levenshtein distance (rapidfuzz: edits divided
  by the longer string's length) between read and label; a missed plate scores 0;
* ms per image: wall time of `recognize`, and its detection and OCR parts when the recogniser
  reports them (`last_timings`).

Also reported, for information only: accuracy with the letter O and digit 0 counted equal
(`exact_plate_accuracy_o0`), because some labels of the public sets write one for the other.

Run: `python -m anpr.evaluate --dataset DIR [--json] [--ocr rapidocr|easyocr]
[--detector onnx|ultralytics|none] [--detector-path FILE] [--limit N] [--report-dir DIR]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rapidfuzz.distance import Levenshtein

from anpr.plates import normalize
from anpr.recognizer import iou
from anpr.types import PlateCandidate, Recognizer

IOU_MATCH = 0.5
SUMMARY_KEYS = (
    "images",
    "detection_recall",
    "detection_precision",
    "exact_plate_accuracy",
    "char_accuracy",
    "ms_per_image",
)


@dataclass
class PlateResult:
    image: str
    box: tuple[float, float, float, float]
    label: str
    read: str | None  # None: no candidate matched the plate
    iou: float
    det_confidence: float
    confidence: float
    format_name: str | None

    @property
    def detected(self) -> bool:
        return self.read is not None

    @property
    def exact(self) -> bool:
        return self.read == self.label

    @property
    def char_accuracy(self) -> float:
        if not self.read:
            return 0.0
        return 1.0 - Levenshtein.normalized_distance(self.read, self.label)


@dataclass
class EvalReport:
    dataset: str
    images: int
    plates: int
    predictions: int
    detection_recall: float
    detection_precision: float
    exact_plate_accuracy: float
    exact_plate_accuracy_o0: float
    char_accuracy: float
    ms_per_image: float
    detect_ms_per_image: float
    ocr_ms_per_image: float
    recognizer: str = ""
    results: list[PlateResult] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """The figures without the per-plate rows (what `--json` prints)."""
        out = {k: v for k, v in asdict(self).items() if k != "results"}
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        return out


def load_labels(dataset_dir: Path) -> list[dict]:
    path = dataset_dir / "labels.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a labelled dataset folder (labels.jsonl missing)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def match(
    labels: Sequence[tuple[float, float, float, float]],
    preds: Sequence[PlateCandidate],
    threshold: float = IOU_MATCH,
) -> dict[int, tuple[int, float]]:
    """Greedy one-to-one matching by IoU: label index -> (prediction index, IoU)."""
    pairs = sorted(
        ((iou(g, p.box), gi, pi) for gi, g in enumerate(labels) for pi, p in enumerate(preds)), reverse=True
    )
    used_g, used_p, out = set(), set(), {}
    for value, gi, pi in pairs:
        if value < threshold:
            break
        if gi in used_g or pi in used_p:
            continue
        used_g.add(gi)
        used_p.add(pi)
        out[gi] = (pi, value)
    return out


def evaluate(
    dataset_dir: str | Path,
    recognizer: Recognizer,
    limit: int | None = None,
    progress: bool = False,
    warmup: bool = True,
) -> EvalReport:
    """Run `recognizer` on every labelled image of `dataset_dir` (the first `limit` lines).

    With `warmup`, the first image is run once untimed so that lazy runtime set-up (thread pools,
    memory arenas) does not count as the first image's time."""
    dataset_dir = Path(dataset_dir)
    rows = load_labels(dataset_dir)
    if limit is not None:
        rows = rows[:limit]
    if warmup and rows:
        first = cv2.imread(str(dataset_dir / rows[0]["image"]))
        if first is not None:
            recognizer.recognize(first)
    results: list[PlateResult] = []
    n_pred = n_tp = 0
    total_ms = det_ms = ocr_ms = 0.0
    for k, row in enumerate(rows):
        image = cv2.imread(str(dataset_dir / row["image"]))
        if image is None:
            raise FileNotFoundError(f"cannot read image {dataset_dir / row['image']}")
        t0 = time.perf_counter()
        preds = recognizer.recognize(image)
        total_ms += (time.perf_counter() - t0) * 1000
        timings = getattr(recognizer, "last_timings", None)
        if timings is not None:
            det_ms += timings.detect_ms
            ocr_ms += timings.ocr_ms
        boxes = [tuple(p["box"]) for p in row["plates"]]
        matched = match(boxes, preds)
        n_pred += len(preds)
        n_tp += len(matched)
        for gi, plate in enumerate(row["plates"]):
            label = normalize(plate.get("text"))
            if not label:
                continue  # a box without text counts for detection only
            pi, value = matched.get(gi, (None, 0.0))
            pred = preds[pi] if pi is not None else None
            results.append(
                PlateResult(
                    image=row["image"],
                    box=tuple(plate["box"]),
                    label=label,
                    read=(pred.text or "") if pred is not None else None,
                    iou=value,
                    det_confidence=pred.det_confidence if pred else 0.0,
                    confidence=pred.confidence if pred else 0.0,
                    format_name=pred.format_name if pred else None,
                )
            )
        if progress:
            print(f"\r{k + 1}/{len(rows)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    n_images = len(rows)
    n_boxes = sum(len(r["plates"]) for r in rows)
    n_text = len(results)

    def frac(num: float, den: float) -> float:
        return num / den if den else 0.0

    return EvalReport(
        dataset=str(dataset_dir),
        images=n_images,
        plates=n_boxes,
        predictions=n_pred,
        detection_recall=frac(n_tp, n_boxes),
        detection_precision=frac(n_tp, n_pred),
        exact_plate_accuracy=frac(sum(r.exact for r in results), n_text),
        exact_plate_accuracy_o0=frac(
            sum(
                (r.read or "").replace("O", "0") == r.label.replace("O", "0") and r.read is not None
                for r in results
            ),
            n_text,
        ),
        char_accuracy=frac(sum(r.char_accuracy for r in results), n_text),
        ms_per_image=frac(total_ms, n_images),
        detect_ms_per_image=frac(det_ms, n_images),
        ocr_ms_per_image=frac(ocr_ms, n_images),
        recognizer=describe(recognizer),
        results=results,
    )


def describe(recognizer: object) -> str:
    parts = [type(recognizer).__name__]
    for attr in ("detector", "ocr"):
        obj = getattr(recognizer, attr, None)
        if obj is not None:
            path = getattr(obj, "path", None)
            parts.append(f"{attr}={type(obj).__name__}" + (f"({path})" if path else ""))
    return " ".join(parts)


# --- report folder -------------------------------------------------------------------------------------


def write_report(
    report: EvalReport, out_dir: str | Path, dataset_dir: str | Path | None = None, worst: int = 24
) -> Path:
    """report.json (figures + every plate), report.md, worst_cases.png (crops of the worst reads)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {**asdict(r), "exact": r.exact, "char_accuracy": round(r.char_accuracy, 4)} for r in report.results
    ]
    (out / "report.json").write_text(json.dumps({"summary": report.summary(), "plates": rows}, indent=1))
    bad = sorted((r for r in report.results if not r.exact), key=lambda r: (r.detected, r.char_accuracy))
    lines = [
        f"# Plate recognition on `{report.dataset}`",
        "",
        f"Recogniser: {report.recognizer}",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in report.summary().items() if k not in ("dataset", "recognizer")]
    lines += ["", f"## Wrong or missed plates ({len(bad)})", "", "| image | label | read | IoU | format |"]
    lines += ["| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {r.image} | {r.label} | {'(missed)' if r.read is None else r.read or '(unread)'} | {r.iou:.2f} | "
        f"{r.format_name or ''} |"
        for r in bad
    ]
    if bad and dataset_dir is not None:
        lines += ["", "![worst cases](worst_cases.png)"]
        _worst_grid(bad[:worst], Path(dataset_dir), out / "worst_cases.png")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out


def _worst_grid(rows: Sequence[PlateResult], dataset_dir: Path, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    cols = 4
    n_rows = int(np.ceil(len(rows) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(cols * 3.2, n_rows * 1.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows, strict=False):
        image = cv2.imread(str(dataset_dir / r.image))
        if image is None:
            continue
        x1, y1, x2, y2 = r.box
        w, h = x2 - x1, y2 - y1
        crop = image[
            int(max(0, y1 - 0.3 * h)) : int(min(image.shape[0], y2 + 0.3 * h)),
            int(max(0, x1 - 0.1 * w)) : int(min(image.shape[1], x2 + 0.1 * w)),
        ]
        ax.imshow(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        read = "(missed)" if r.read is None else (r.read or "(unread)")
        ax.set_title(f"{r.label} -> {read}", fontsize=8, color="red")
    fig.tight_layout()
    fig.savefig(target, dpi=80)
    plt.close(fig)


# --- entry points ----------------------------------------------------------------------------------


def main_eval(
    dataset: str | Path,
    backend: str = "rapidocr",
    json_out: bool = False,
    report_dir: str | Path | None = None,
    limit: int | None = None,
    detector: str = "onnx",
    detector_path: str | Path | None = None,
    formats: str = "eu",
    threads: int | None = None,
    proposer: str = "rapidocr",
) -> EvalReport:
    """Build the recogniser, evaluate, print (a JSON object as the LAST line when `json_out`)."""
    from anpr.recognizer import make_recognizer

    recognizer = make_recognizer(
        ocr=backend,
        detector=detector,
        detector_path=detector_path,
        formats=formats,
        threads=threads,
        proposer=proposer,
    )
    report = evaluate(dataset, recognizer, limit=limit, progress=not json_out)
    if report_dir is not None:
        write_report(report, report_dir, dataset)
    summary = report.summary()
    if json_out:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>26}: {value}")
        if report_dir is not None:
            print(f"{'report':>26}: {report_dir}")
    return report


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m anpr.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True, type=Path, help="folder with labels.jsonl and images/")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line (last line)")
    ap.add_argument("--ocr", default="rapidocr", choices=["rapidocr", "easyocr"])
    ap.add_argument("--detector", default="onnx", choices=["onnx", "ultralytics", "none"])
    ap.add_argument(
        "--detector-path", type=Path, default=None, help="model file (default: the committed one)"
    )
    ap.add_argument("--formats", default="eu", help="format set (eu, uk, br, all) or comma list of names")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--report-dir", type=Path, default=None, help="write report.json/.md and a PNG here")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per model (default 1, or BAYWARDEN_INFER_THREADS)",
    )
    ap.add_argument(
        "--proposer",
        default="rapidocr",
        choices=["rapidocr", "ocr", "none"],
        help="text detector for fallback proposals and box growing (default: RapidOCR's DBNet)",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    main_eval(
        args.dataset,
        backend=args.ocr,
        json_out=args.json,
        report_dir=args.report_dir,
        limit=args.limit,
        detector=args.detector,
        detector_path=args.detector_path,
        formats=args.formats,
        threads=args.threads,
        proposer=args.proposer,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
