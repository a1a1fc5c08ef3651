"""Evaluate a plate recogniser on one or more labelled folders (`labels.jsonl`, see shared/datasets/README.md).

Two kinds of folder, told apart by their rows:

* scenes (rows with `plates` boxes, e.g. plates-dev): the recogniser's `recognize` runs on the whole
  photo; detection and reading are both measured;
* crops (rows with `text` and no `plates`, e.g. plate-crops, plate-crops-us): the image is one plate,
  so detection is skipped and the recogniser reads a box covering the whole image with `read_box`
  (the product's path for a detected box; a recogniser without `read_box` runs `recognize` and its
  most confident candidate counts). Detection recall/precision are null for crop sets.

Rows are filtered by `split` first: `--split train|val|all`, or `DIR:split` per folder; by default
`val` (rows without a `split` field count as held out, so a folder without the field, like
plates-dev, is used whole). `--limit N` then keeps the first N rows of each folder.

Figures, per folder and over all folders together (every plate with a text label counts):

* detection recall / precision (scene sets only): a labelled plate is found when a returned candidate
  overlaps it with IoU >= 0.5 (one candidate per plate, greedy by IoU); precision is over every
  returned box; boxes without text count here too;
* exact plate accuracy: the text read equals the label after normalisation to A-Z0-9; a missed or
  unread plate counts as wrong;
* char accuracy: mean over plates of 1 - normalised Levenshtein distance (rapidfuzz: edits divided
  by the longer string's length) between read and label; a missed plate scores 0;
* auto-accept coverage / precision at `--threshold` (default: the enforcement rules' default
  `confirmation_threshold`, below which a penalty needs operator review): coverage is the share of
  labelled plates read with confidence >= threshold, precision the share of those reads that are
  exact (null when none is accepted). `auto_accept_unmatched` (scene sets) counts returned
  candidates matching no labelled box that would still be accepted: false plates the review skips;
* length errors: counts of plates missed (no candidate), read empty, read shorter / longer than the
  label, and read at the right length but wrong;
* ms per image: wall time of `recognize` (scenes) or of the whole-crop read (crops), and for scenes
  its detection and OCR parts when the recogniser reports them (`last_timings`).

Also reported, for information only: accuracy with the letter O and digit 0 counted equal
(`exact_plate_accuracy_o0`), because some labels of the public sets write one for the other.

Run: `python -m anpr.evaluate --dataset DIR[:split] [--dataset DIR[:split] ...] [--split train|val|all]
[--json] [--threshold T] [--ocr NAME] [--detector onnx|ultralytics|none] [--detector-path FILE]
[--formats SET] [--limit N] [--report DIR]`.
`--json` prints one JSON object as the last line (figures over all folders, plus `datasets`: the same
figures per folder with `name`, `kind` and `split`). `--report DIR` (alias `--report-dir`) writes
report.json (summary and one row per plate), report.md, worst_cases.png and accuracy_by_height.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rapidfuzz.distance import Levenshtein

from anpr.ocr import OcrLoadError
from anpr.plates import normalize
from anpr.recognizer import iou
from anpr.types import PlateCandidate, Recognizer
from models.settings import DEFAULT_CONFIRMATION_THRESHOLD

DEFAULT_THRESHOLD = DEFAULT_CONFIRMATION_THRESHOLD  # below it a penalty needs operator review

IOU_MATCH = 0.5
SPLITS = ("train", "val", "all")
SUMMARY_KEYS = (
    "images",
    "detection_recall",
    "detection_precision",
    "exact_plate_accuracy",
    "char_accuracy",
    "ms_per_image",
)
LENGTH_ERRORS = ("missed", "empty", "shorter", "longer", "same_length_wrong")
HEIGHT_BINS = (0, 16, 24, 32, 48, 64)  # lower edges in px; the last bin is open (>= 64)


class UsageError(ValueError):
    """A wrong argument (unknown backend, format set or split; an empty split): the CLI's usage error."""


def height_bin(height: float) -> str:
    """The label of the plate-height bin `height` (px) falls in: '<16', '16-24', ..., '>=64'."""
    edges = HEIGHT_BINS
    if height < edges[1]:
        return f"<{edges[1]}"
    for lo, hi in itertools.pairwise(edges[1:]):
        if height < hi:
            return f"{lo}-{hi}"
    return f">={edges[-1]}"


HEIGHT_BIN_LABELS = tuple(height_bin(e) for e in HEIGHT_BINS)


@dataclass
class PlateResult:
    image: str
    box: tuple[float, float, float, float]
    label: str
    read: str | None  # None: no candidate matched the plate (scenes only)
    iou: float
    det_confidence: float
    confidence: float
    format_name: str | None
    dataset: str = ""

    @property
    def detected(self) -> bool:
        return self.read is not None

    @property
    def exact(self) -> bool:
        return self.read == self.label

    @property
    def exact_o0(self) -> bool:
        return self.read is not None and self.read.replace("O", "0") == self.label.replace("O", "0")

    @property
    def char_accuracy(self) -> float:
        if not self.read:
            return 0.0
        return 1.0 - Levenshtein.normalized_distance(self.read, self.label)

    @property
    def plate_height_px(self) -> float:
        """Labelled box height (scenes) or crop image height (crops)."""
        return float(self.box[3] - self.box[1])

    @property
    def length_error(self) -> str | None:
        """Which of LENGTH_ERRORS this read is, or None when exact."""
        if self.read is None:
            return "missed"
        if self.read == self.label:
            return None
        if not self.read:
            return "empty"
        if len(self.read) < len(self.label):
            return "shorter"
        if len(self.read) > len(self.label):
            return "longer"
        return "same_length_wrong"

    def accepted(self, threshold: float) -> bool:
        """Would the product take this read without operator review?"""
        return bool(self.read) and self.confidence >= threshold


@dataclass
class EvalReport:
    dataset: str  # folder (or folders, comma-separated, for the summary over several)
    images: int
    plates: int  # scenes: labelled boxes (with or without text); crops: crops with text
    predictions: int  # scenes: candidates returned; crops: 0
    detection_recall: float | None  # None for crop sets
    detection_precision: float | None
    exact_plate_accuracy: float
    exact_plate_accuracy_o0: float
    char_accuracy: float
    ms_per_image: float
    detect_ms_per_image: float
    ocr_ms_per_image: float
    recognizer: str = ""
    results: list[PlateResult] = field(default_factory=list)
    name: str = ""
    kind: str = "scenes"  # scenes | crops | mixed (summary over both kinds)
    split: str = "all"
    text_plates: int = 0  # plates with a text label: the denominator of the reading figures
    matched: int = 0  # labelled boxes a candidate matched (scenes)
    auto_accept_threshold: float = DEFAULT_THRESHOLD
    auto_accept_coverage: float = 0.0
    auto_accept_precision: float | None = None
    auto_accept_unmatched: int | None = None
    length_errors: dict[str, int] = field(default_factory=dict)
    datasets: list[EvalReport] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """The figures without the per-plate rows (what `--json` prints); `datasets` as summaries."""
        out = {k: v for k, v in asdict(self).items() if k not in ("results", "datasets")}
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        if self.datasets:
            out["datasets"] = [d.summary() for d in self.datasets]
        return out

    def by_height(self) -> list[dict[str, object]]:
        """Exact accuracy per plate-height bin (bins without plates left out)."""
        rows = []
        for label in HEIGHT_BIN_LABELS:
            got = [r for r in self.results if height_bin(r.plate_height_px) == label]
            if got:
                exact = sum(r.exact for r in got)
                rows.append({"bin": label, "plates": len(got), "exact": exact, "accuracy": round(exact / len(got), 4)})
        return rows


def _frac(num: float, den: float) -> float:
    return num / den if den else 0.0


def _reading_figures(results: Sequence[PlateResult], threshold: float) -> dict[str, object]:
    n = len(results)
    accepted = [r for r in results if r.accepted(threshold)]
    errors = dict.fromkeys(LENGTH_ERRORS, 0)
    for r in results:
        kind = r.length_error
        if kind is not None:
            errors[kind] += 1
    return {
        "text_plates": n,
        "exact_plate_accuracy": _frac(sum(r.exact for r in results), n),
        "exact_plate_accuracy_o0": _frac(sum(r.exact_o0 for r in results), n),
        "char_accuracy": _frac(sum(r.char_accuracy for r in results), n),
        "auto_accept_threshold": threshold,
        "auto_accept_coverage": _frac(len(accepted), n),
        "auto_accept_precision": (sum(r.exact for r in accepted) / len(accepted)) if accepted else None,
        "length_errors": errors,
    }


def load_labels(dataset_dir: Path) -> list[dict]:
    path = Path(dataset_dir) / "labels.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a labelled dataset folder (labels.jsonl missing)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def dataset_kind(rows: Sequence[dict]) -> str:
    """`scenes` when rows carry `plates` boxes, `crops` when they carry a `text` and no boxes."""
    if any("plates" in r for r in rows):
        return "scenes"
    if rows and all("text" in r for r in rows):
        return "crops"
    raise ValueError("rows have neither `plates` (scene set) nor `text` (crop set)")


def select_split(rows: Sequence[dict], split: str | None) -> tuple[list[dict], str]:
    """Rows of `split` (None: `val`), and the split's name. Rows without a `split` field are
    held-out evaluation rows and count as `val` (plates-dev has none and is all held out)."""
    split = split or "val"
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if split == "all":
        return list(rows), split
    return [r for r in rows if r.get("split", "val") == split], split


def parse_dataset_spec(spec: str | Path) -> tuple[Path, str | None]:
    """`DIR` or `DIR:split` -> (folder, split or None)."""
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and tail in SPLITS and head:
        return Path(head), tail
    return Path(text), None


def match(
    labels: Sequence[tuple[float, float, float, float]],
    preds: Sequence[PlateCandidate],
    threshold: float = IOU_MATCH,
) -> dict[int, tuple[int, float]]:
    """Greedy one-to-one matching by IoU: label index -> (prediction index, IoU)."""
    pairs = sorted(((iou(g, p.box), gi, pi) for gi, g in enumerate(labels) for pi, p in enumerate(preds)), reverse=True)
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


def read_crop(recognizer: Recognizer, image: np.ndarray) -> PlateCandidate | None:
    """Read a plate crop as the product reads a detected box covering it.

    `read_box(image, whole image)` when the recogniser has it (PlateRecognizer: crop variants,
    pooled reads, formats); otherwise `recognize` on the crop and its most confident candidate."""
    h, w = image.shape[:2]
    box = (0.0, 0.0, float(w), float(h))
    read_box = getattr(recognizer, "read_box", None)
    if callable(read_box):
        read = read_box(image, box)
        if read is None:
            return None
        return PlateCandidate(
            box=box,
            det_confidence=1.0,
            text=read.text,
            confidence=float(read.confidence),
            char_confidences=tuple(read.char_confidences),
            format_name=read.format_name,
            raw_text=read.raw_text,
        )
    cands = [c for c in recognizer.recognize(image) if c.text]
    return max(cands, key=lambda c: c.confidence, default=None)


def evaluate(
    dataset_dir: str | Path,
    recognizer: Recognizer,
    limit: int | None = None,
    progress: bool = False,
    warmup: bool = True,
    split: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    name: str | None = None,
) -> EvalReport:
    """Run `recognizer` on the rows of `split` of `dataset_dir` (the first `limit` of them).

    With `warmup`, the first image is run once untimed so that lazy runtime set-up (thread pools,
    memory arenas) does not count as the first image's time."""
    dataset_dir = Path(dataset_dir)
    name = name or dataset_dir.name or str(dataset_dir)
    all_rows = load_labels(dataset_dir)
    kind = dataset_kind(all_rows)
    rows, split = select_split(all_rows, split)
    if not rows:
        raise UsageError(f"{dataset_dir}: no rows in split {split!r} (rows without a `split` field count as val)")
    if limit is not None:
        rows = rows[:limit]

    def load(row: dict) -> np.ndarray:
        image = cv2.imread(str(dataset_dir / row["image"]))
        if image is None:
            raise FileNotFoundError(f"cannot read image {dataset_dir / row['image']}")
        return image

    if warmup:
        first = cv2.imread(str(dataset_dir / rows[0]["image"]))
        if first is not None:
            if kind == "scenes":
                recognizer.recognize(first)
            else:
                read_crop(recognizer, first)
    results: list[PlateResult] = []
    n_pred = n_tp = n_unmatched_accepted = 0
    total_ms = det_ms = ocr_ms = 0.0
    for k, row in enumerate(rows):
        image = load(row)
        if kind == "crops":
            label = normalize(row.get("text"))
            t0 = time.perf_counter()
            cand = read_crop(recognizer, image)
            ms = (time.perf_counter() - t0) * 1000
            total_ms += ms
            ocr_ms += ms
            h, w = image.shape[:2]
            if label:
                results.append(
                    PlateResult(
                        image=row["image"],
                        box=(0.0, 0.0, float(w), float(h)),
                        label=label,
                        read=(cand.text or "") if cand is not None else "",
                        iou=1.0,
                        det_confidence=1.0,
                        confidence=cand.confidence if cand is not None else 0.0,
                        format_name=cand.format_name if cand is not None else None,
                        dataset=name,
                    )
                )
        else:
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
            used = {pi for pi, _ in matched.values()}
            n_unmatched_accepted += sum(
                1 for pi, p in enumerate(preds) if pi not in used and p.text and p.confidence >= threshold
            )
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
                        dataset=name,
                    )
                )
        if progress:
            print(f"\r{name}: {k + 1}/{len(rows)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    n_images = len(rows)
    scenes = kind == "scenes"
    n_boxes = sum(len(r["plates"]) for r in rows) if scenes else len(results)
    return EvalReport(
        dataset=str(dataset_dir),
        images=n_images,
        plates=n_boxes,
        predictions=n_pred,
        detection_recall=_frac(n_tp, n_boxes) if scenes else None,
        detection_precision=_frac(n_tp, n_pred) if scenes else None,
        ms_per_image=_frac(total_ms, n_images),
        detect_ms_per_image=_frac(det_ms, n_images),
        ocr_ms_per_image=_frac(ocr_ms, n_images),
        recognizer=describe(recognizer),
        results=results,
        name=name,
        kind=kind,
        split=split,
        matched=n_tp,
        auto_accept_unmatched=n_unmatched_accepted if scenes else None,
        **_reading_figures(results, threshold),  # type: ignore[arg-type]
    )


def combine(reports: Sequence[EvalReport], threshold: float | None = None) -> EvalReport:
    """The figures over several folders' plates together, with the folders' reports in `datasets`.

    Detection figures pool the scene sets only (null when there is none); timings are per image
    over all images."""
    if not reports:
        raise ValueError("nothing to combine")
    threshold = reports[0].auto_accept_threshold if threshold is None else threshold
    results = [r for rep in reports for r in rep.results]
    scenes = [rep for rep in reports if rep.kind == "scenes"]
    images = sum(rep.images for rep in reports)
    kinds = {rep.kind for rep in reports}
    splits = {rep.split for rep in reports}
    boxes = sum(rep.plates for rep in scenes)
    preds = sum(rep.predictions for rep in scenes)
    tp = sum(rep.matched for rep in scenes)

    def per_image(attr: str) -> float:
        return _frac(sum(getattr(rep, attr) * rep.images for rep in reports), images)

    return EvalReport(
        dataset=", ".join(rep.dataset for rep in reports),
        images=images,
        plates=sum(rep.plates for rep in reports),
        predictions=preds,
        detection_recall=_frac(tp, boxes) if scenes else None,
        detection_precision=_frac(tp, preds) if scenes else None,
        ms_per_image=per_image("ms_per_image"),
        detect_ms_per_image=per_image("detect_ms_per_image"),
        ocr_ms_per_image=per_image("ocr_ms_per_image"),
        recognizer=reports[0].recognizer,
        results=results,
        name="all",
        kind=kinds.pop() if len(kinds) == 1 else "mixed",
        split=splits.pop() if len(splits) == 1 else "mixed",
        matched=tp,
        auto_accept_unmatched=sum(rep.auto_accept_unmatched or 0 for rep in scenes) if scenes else None,
        datasets=list(reports),
        **_reading_figures(results, threshold),  # type: ignore[arg-type]
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


def _parts(report: EvalReport) -> list[EvalReport]:
    return list(report.datasets) or [report]


def plate_rows(report: EvalReport) -> list[dict[str, object]]:
    """One JSON-ready row per plate (what report.json's `plates` holds)."""
    return [
        {
            "dataset": r.dataset,
            "image": r.image,
            "label": r.label,
            "read": r.read,
            "confidence": round(r.confidence, 4),
            "exact": r.exact,
            "plate_height_px": round(r.plate_height_px, 2),
            "char_accuracy": round(r.char_accuracy, 4),
            "length_error": r.length_error,
            "box": list(r.box),
            "iou": round(r.iou, 4),
            "det_confidence": round(r.det_confidence, 4),
            "format_name": r.format_name,
        }
        for r in report.results
    ]


def write_report(
    report: EvalReport, out_dir: str | Path, dataset_dir: str | Path | None = None, worst: int = 24
) -> Path:
    """report.json (figures, accuracy by plate height, every plate), report.md, worst_cases.png
    (crops of the worst reads) and accuracy_by_height.png (exact accuracy per height bin and folder).

    `report` is one folder's or a summary from `combine`; `dataset_dir` overrides where a single
    folder's images are."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = _parts(report)
    dirs = {p.name: Path(p.dataset) for p in parts}
    if dataset_dir is not None and len(parts) == 1:
        dirs[parts[0].name] = Path(dataset_dir)
    by_height = {f"{p.name}:{p.split}": p.by_height() for p in parts}
    (out / "report.json").write_text(
        json.dumps({"summary": report.summary(), "by_height": by_height, "plates": plate_rows(report)}, indent=1)
    )
    bad = sorted((r for r in report.results if not r.exact), key=lambda r: (r.detected, r.char_accuracy))
    lines = [f"# Plate recognition on `{report.dataset}`", "", f"Recogniser: {report.recognizer}", ""]
    skip = ("dataset", "recognizer", "name", "length_errors")
    for p in [*parts, report] if len(parts) > 1 else parts:
        title = "All folders together" if p is report and len(parts) > 1 else f"`{p.name}` ({p.kind}, {p.split})"
        lines += [f"## {title}", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in p.summary().items() if k not in skip and k != "datasets"]
        lines += [f"| length errors | {', '.join(f'{k} {v}' for k, v in p.length_errors.items())} |", ""]
        lines += ["| plate height px | plates | exact |", "| --- | --- | --- |"]
        lines += [f"| {b['bin']} | {b['plates']} | {b['accuracy']} |" for b in p.by_height()]
        lines += [""]
    lines += [f"## Wrong or missed plates ({len(bad)})", "", "| dataset | image | label | read | conf | IoU | format |"]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [
        f"| {r.dataset} | {r.image} | {r.label} | {'(missed)' if r.read is None else r.read or '(unread)'} | "
        f"{r.confidence:.2f} | {r.iou:.2f} | {r.format_name or ''} |"
        for r in bad
    ]
    if bad and all(d is not None for d in dirs.values()):
        lines += ["", "![worst cases](worst_cases.png)"]
        _worst_grid(bad[:worst], dirs, out / "worst_cases.png")
    if report.results:
        lines += ["", "![exact accuracy by plate height](accuracy_by_height.png)"]
        _height_plot(parts, out / "accuracy_by_height.png")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def _height_plot(parts: Sequence[EvalReport], target: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4))
    width = 0.8 / max(1, len(parts))
    x = np.arange(len(HEIGHT_BIN_LABELS))
    for i, p in enumerate(parts):
        rows = {b["bin"]: b for b in p.by_height()}
        acc = [rows[b]["accuracy"] if b in rows else np.nan for b in HEIGHT_BIN_LABELS]
        bars = ax.bar(x + (i - (len(parts) - 1) / 2) * width, acc, width, label=f"{p.name} ({p.split})")
        for bar, b in zip(bars, HEIGHT_BIN_LABELS, strict=True):
            if b in rows:
                ax.annotate(
                    f"n={rows[b]['plates']}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                )
    ax.set_xticks(x, [f"{b} px" for b in HEIGHT_BIN_LABELS])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("exact plate accuracy")
    ax.set_xlabel("plate height (labelled box, or crop height)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    fig.tight_layout()
    fig.savefig(target, dpi=90)
    plt.close(fig)


def _worst_grid(rows: Sequence[PlateResult], dirs: dict[str, Path], target: Path) -> None:
    plt = _pyplot()
    cols = 4
    n_rows = int(np.ceil(len(rows) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(cols * 3.2, n_rows * 1.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows, strict=False):
        image = cv2.imread(str(dirs.get(r.dataset, Path()) / r.image))
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
        ax.set_title(f"{r.label} -> {read} ({r.confidence:.2f})", fontsize=8, color="red")
    fig.tight_layout()
    fig.savefig(target, dpi=80)
    plt.close(fig)


# --- entry points ----------------------------------------------------------------------------------


def _format_block(report: EvalReport, title: str) -> list[str]:
    lines = [f"== {title}"]
    for key, value in report.summary().items():
        if key in ("datasets", "length_errors", "recognizer", "name", "kind", "split"):
            continue  # the recogniser is printed once; name, kind and split are in the title
        lines.append(f"{key:>26}: {value}")
    lines.append(f"{'length_errors':>26}: " + ", ".join(f"{k} {v}" for k, v in report.length_errors.items()))
    return lines


def main_eval(
    dataset: str | Path | Sequence[str | Path],
    backend: str = "ensemble",
    json_out: bool = False,
    report_dir: str | Path | None = None,
    limit: int | None = None,
    detector: str = "onnx",
    detector_path: str | Path | None = None,
    formats: str = "eu",
    threads: int | None = None,
    proposer: str = "rapidocr",
    split: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    region: str = "generic",
    calibration: str | Path | None = None,
    tiles: str | None = None,
    recognizer_path: str | Path | None = None,
) -> EvalReport:
    """Build the recogniser, evaluate every folder, print one block per folder and a summary over
    all (with `json_out`: one JSON object as the LAST line). `dataset`: one `DIR[:split]` or a list."""
    from anpr.recognizer import make_recognizer

    specs = [dataset] if isinstance(dataset, str | Path) else list(dataset)
    parsed = [parse_dataset_spec(s) for s in specs]
    for path, _ in parsed:
        if not (path / "labels.jsonl").is_file():
            raise FileNotFoundError(f"{path / 'labels.jsonl'}: not a labelled dataset folder (labels.jsonl missing)")
    try:
        recognizer = make_recognizer(
            ocr=backend,
            detector=detector,
            detector_path=detector_path,
            formats=formats,
            threads=threads,
            proposer=proposer,
            region=region,
            calibration=calibration,
            recognizer_path=recognizer_path,
            **({"tiles": tiles} if tiles else {}),
        )
    except (ValueError, KeyError) as exc:  # unknown OCR backend, format, region or proposer name
        raise UsageError(str(exc).strip("'\"")) from exc
    reports = [
        evaluate(path, recognizer, limit=limit, progress=not json_out, split=own or split, threshold=threshold)
        for path, own in parsed
    ]
    report = combine(reports, threshold)
    if report_dir is not None:
        write_report(report, report_dir)
    if json_out:
        print(json.dumps(report.summary()))
    else:
        lines = [f"recogniser: {report.recognizer}", ""]
        for part in reports:
            lines += [*_format_block(part, f"{part.name} ({part.kind}, split {part.split})"), ""]
        lines += _format_block(report, f"all {len(reports)} folder(s) together")
        if report_dir is not None:
            lines.append(f"{'report':>26}: {report_dir}")
        print("\n".join(lines))
    return report


def _ocr_names() -> list[str]:
    try:
        from anpr.ocr import OCR_BACKENDS

        return list(dict.fromkeys(["rapidocr", "easyocr", *OCR_BACKENDS]))
    except ImportError:  # pragma: no cover
        return ["rapidocr", "easyocr"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m anpr.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--dataset",
        required=True,
        action="append",
        help="folder with labels.jsonl and images/, optionally DIR:train|val|all; may be repeated",
    )
    ap.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="rows to use where no DIR:split is given (default val; rows without a split field count as val)",
    )
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line (last line)")
    ap.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"auto-accept confidence (default {DEFAULT_THRESHOLD}: the rules' confirmation_threshold)",
    )
    # no argparse choices: a backend registered in anpr.ocr after this file was written still works;
    # make_ocr names the known ones when the name is wrong
    ap.add_argument(
        "--ocr",
        default="ensemble",
        help=f"OCR backend: {', '.join(_ocr_names())} or any other name anpr.ocr.make_ocr knows",
    )
    ap.add_argument("--detector", default="onnx", choices=["onnx", "ultralytics", "none"])
    ap.add_argument("--detector-path", type=Path, default=None, help="model file (default: the committed one)")
    ap.add_argument("--formats", default="eu", help="format set (eu, uk, br, generic, all) or comma list of names")
    ap.add_argument("--limit", type=int, default=None, help="only the first N rows of each folder (after --split)")
    ap.add_argument("--region", default="generic", help="plate region(s) of the ensemble: eu, uk, us, br, generic")
    ap.add_argument("--calibration", type=Path, default=None, help="confidence calibration (default: committed)")
    ap.add_argument(
        "--recognizer-path",
        type=Path,
        default=None,
        help="plate recogniser model for platerec / the ensemble (default: the committed one)",
    )
    ap.add_argument(
        "--report",
        "--report-dir",
        dest="report_dir",
        type=Path,
        default=None,
        help="write report.json/.md and PNG plots here",
    )
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
    ap.add_argument(
        "--tiles",
        default=None,
        choices=["fallback", "always", "off"],
        help="second detector pass on overlapping windows (default: the reader's own, fallback for the ensemble)",
    )
    args = ap.parse_args(argv)
    args.parser = ap
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
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
            split=args.split,
            threshold=args.threshold,
            region=args.region,
            calibration=args.calibration,
            tiles=args.tiles,
            recognizer_path=args.recognizer_path,
        )
    except (UsageError, FileNotFoundError) as exc:  # unknown backend/format/split, no labels.jsonl
        args.parser.error(str(exc))
    except OcrLoadError as exc:  # a model or calibration file missing or unreadable
        args.parser.exit(1, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
