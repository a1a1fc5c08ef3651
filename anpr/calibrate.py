"""Fit the confidence of the ensemble reader on validation reads: `baywarden anpr calibrate`.

For every labelled plate of the given folders (validation splits by default; scene sets are read in
their labelled box, crop sets whole, as `anpr eval` reads them) the reader's evidence is collected
(`anpr.ensemble.FEATURES`) with whether the read is exact. A logistic model is fitted on all of it and
written to `anpr/weights/calibration.json`, with:

* cross-fitted figures: the rows are split in two halves by plate text, each half is scored by a model
  fitted on the other, so the printed precision of auto-accepted reads is measured on reads the
  model did not see;
* the recommended review threshold: the smallest on a grid whose cross-fitted auto-accept precision is
  at least `--target` on every folder and over all of them.

Never give it the folders the figures are reported on (plates-dev, the private sets).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from anpr.ensemble import DEFAULT_CALIBRATION, FEATURES, Calibrator, EnsembleReader
from anpr.evaluate import dataset_kind, load_labels, parse_dataset_spec, select_split
from anpr.plates import normalize
from anpr.recognizer import CROP_VARIANTS

DEFAULT_DATASETS = ("plate-crops:val", "plate-crops-us:val", "plates-train:val")
GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995)


def collect(reader: EnsembleReader, spec: str, limit: int | None = None, progress: bool = True) -> list[dict]:
    """One row per labelled plate: dataset, label, read, exact, features."""
    path, split = parse_dataset_spec(spec)
    rows, split = select_split(load_labels(path), split)
    kind = dataset_kind(rows)
    out: list[dict] = []
    if limit:
        rows = rows[:limit]
    try:
        from tqdm import tqdm

        it = tqdm(rows, desc=f"{path.name}:{split}", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        it = rows
    for row in it:
        image = cv2.imread(str(path / row["image"]))
        if image is None:
            raise FileNotFoundError(f"{path / row['image']}: cannot read image")
        if kind == "crops":
            h, w = image.shape[:2]
            plates = [((0.0, 0.0, float(w), float(h)), row["text"])]
        else:
            plates = [(tuple(p["box"]), p["text"]) for p in row["plates"] if p.get("text")]
        for box, label in plates:
            crop = CROP_VARIANTS["tight"](image, box)
            ev = reader.evidence(crop)
            label = normalize(label)
            out.append({
                "dataset": path.name,
                "label": label,
                "read": ev.text if ev else "",
                "exact": bool(ev and ev.text == label),
                "features": ev.features if ev else None,
            })
    return out


def _fold(label: str) -> int:
    return hashlib.sha256(label.encode()).digest()[0] & 1


def cross_fit(rows: Sequence[dict]) -> np.ndarray:
    """Each row's probability from a model fitted on the other half (split by plate text)."""
    probs = np.zeros(len(rows))
    for fold in (0, 1):
        train = [r for r in rows if _fold(r["label"]) != fold]
        model = Calibrator.fit([r["features"] for r in train], [r["exact"] for r in train])
        for i, r in enumerate(rows):
            if _fold(r["label"]) == fold:
                probs[i] = model(r["features"])
    return probs


def accept_table(rows: Sequence[dict], probs: np.ndarray) -> dict[str, dict[str, dict[str, float | None]]]:
    """{dataset or "all": {threshold: {coverage, precision}}} (precision None when nothing passes)."""
    names = sorted({r["dataset"] for r in rows})
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in [*names, "all"]:
        idx = [i for i, r in enumerate(rows) if name == "all" or r["dataset"] == name]
        exact = np.array([rows[i]["exact"] for i in idx])
        p = probs[idx]
        table = {}
        for t in GRID:
            acc = p >= t
            n = int(acc.sum())
            table[str(t)] = {
                "coverage": round(n / len(idx), 4) if idx else 0.0,
                "precision": round(float(exact[acc].mean()), 4) if n else None,
                "accepted": n,
            }
        out[name] = table
    return out


def recommend(table: dict, target: float) -> float | None:
    for t in GRID:
        precs = [table[name][str(t)]["precision"] for name in table]
        if all(p is None or p >= target for p in precs):
            return t
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="baywarden anpr calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", action="append", default=None,
                    help="DIR[:split], repeat (default: the val splits of plate-crops, plate-crops-us, plates-train)")
    ap.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--region", default="generic", help="regions the reader applies (as anpr.region)")
    ap.add_argument("--out", type=Path, default=DEFAULT_CALIBRATION)
    ap.add_argument("--target", type=float, default=0.99, help="auto-accept precision the threshold must reach")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--rows", type=Path, default=None, help="also write the per-plate rows (JSON) here")
    ap.add_argument("--recognizer-path", type=Path, default=None,
                    help="plate recogniser model to calibrate (default: the committed one)")
    args = ap.parse_args(argv)

    from anpr.ocr import RapidOcrBackend, make_ocr
    from anpr.regions import get_regions

    specs = args.dataset or [str(args.data_root / d) for d in DEFAULT_DATASETS]
    platerec = make_ocr("platerec", **({"model_path": args.recognizer_path} if args.recognizer_path else {}))
    reader = EnsembleReader(platerec, RapidOcrBackend(), get_regions(args.region), None)
    t0 = time.perf_counter()
    rows = [r for spec in specs for r in collect(reader, spec, args.limit)]
    usable = [r for r in rows if r["features"] is not None]
    probs = cross_fit(usable)
    table = accept_table(usable, probs)
    threshold = recommend(table, args.target)
    final = Calibrator.fit([r["features"] for r in usable], [r["exact"] for r in usable])
    model_path = Path(reader.primary.model_path)  # type: ignore[attr-defined]
    final.save(
        args.out,
        fitted_on=[str(s) for s in specs],
        plates=len(usable),
        exact_share=round(float(np.mean([r["exact"] for r in usable])), 4),
        region=args.region,
        recognizer_sha256=hashlib.sha256(model_path.read_bytes()).hexdigest()[:16],
        recommended_threshold=threshold,
        target_precision=args.target,
        cross_fitted=table,
    )
    if args.rows:
        args.rows.write_text(json.dumps(rows, indent=1))
    for name, t in table.items():
        print(f"{name}: " + ", ".join(
            f"{k}: {v['coverage']:.2f}/{v['precision'] if v['precision'] is not None else '-'}" for k, v in t.items()
            if float(k) >= 0.8
        ))
    print(f"features {list(FEATURES)}")
    print(f"coef {[round(float(c), 3) for c in final.coef]} intercept {final.intercept:.3f}")
    print(f"recommended threshold (cross-fitted precision >= {args.target} everywhere): {threshold}")
    print(f"wrote {args.out} from {len(usable)} plates in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
