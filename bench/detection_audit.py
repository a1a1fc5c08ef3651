"""Look at what the detection figures count as wrong: unmatched detections, missed boxes, broken frames.

    python bench/detection_audit.py --dataset ../shared/datasets/plates-train:val [--out runs/audit]

Runs the default pipeline (`ensemble`, region `generic`) over a scene set's split and prints, per image,
every detection no label box matches at IoU >= 0.5 (with its read, size and best IoU against a label)
and every label box nothing matched. Frames that are (almost) uniformly black but carry label boxes are
listed apart: nothing can find those plates. `OUT/unmatched.png` shows each unmatched detection with its
surroundings, numbered as printed, so a person can tell a real plate the labels left out (a distant car,
a plate half hidden at the frame's edge) from a false detection. It is a diagnostic for the detection
figures of `baywarden anpr eval`; it changes no figure and chooses nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anpr.evaluate import load_labels, match, parse_dataset_spec, select_split  # noqa: E402
from anpr.recognizer import iou, make_recognizer  # noqa: E402


def _tile(img: np.ndarray, box: tuple[float, ...], caption: str) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    half = max(x2 - x1, 60)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    X1, Y1 = max(0, cx - half), max(0, cy - half // 2)
    X2, Y2 = min(img.shape[1], cx + half), min(img.shape[0], cy + half // 2)
    crop = img[Y1:Y2, X1:X2].copy()
    cv2.rectangle(crop, (x1 - X1, y1 - Y1), (x2 - X1, y2 - Y1), (0, 0, 255), 1)
    crop = cv2.resize(crop, (300, 150), interpolation=cv2.INTER_CUBIC)
    cv2.putText(crop, caption, (3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
    return crop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="scene set folder, optionally :split (default val)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "detection-audit")
    ap.add_argument("--ocr", default="ensemble")
    ap.add_argument("--region", default="generic")
    args = ap.parse_args()
    folder, split = parse_dataset_spec(args.dataset)
    rows, split = select_split(load_labels(folder), split)
    rec = make_recognizer(ocr=args.ocr, region=args.region)
    tiles: list[np.ndarray] = []
    n_boxes = n_pred = n_tp = 0
    black: list[str] = []
    for row in rows:
        img = cv2.imread(str(folder / row["image"]))
        if img is None:
            print(f"{row['image']}: cannot be read")
            continue
        boxes = [tuple(p["box"]) for p in row["plates"]]
        n_boxes += len(boxes)
        if boxes and float(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).std()) < 3:
            black.append(f"{row['image']} ({len(boxes)} boxes)")
        preds = rec.recognize(img)
        matched = match(boxes, preds)
        used = {pi for pi, _ in matched.values()}
        n_pred += len(preds)
        n_tp += len(matched)
        for pi, p in enumerate(preds):
            if pi in used:
                continue
            w, h = p.box[2] - p.box[0], p.box[3] - p.box[1]
            best = max((iou(b, p.box) for b in boxes), default=0.0)
            print(f"[{len(tiles)}] unmatched {row['image']}: read {p.text!r} {w:.0f}x{h:.0f} px, "
                  f"detector {p.det_confidence:.2f}, best IoU {best:.2f}")
            tiles.append(_tile(img, p.box, f"{len(tiles)} {p.text or ''} {w:.0f}x{h:.0f}"))
        for gi, b in enumerate(boxes):
            if gi not in matched:
                best = max((iou(b, p.box) for p in preds), default=0.0)
                print(f"missed {row['image']}: box {b[2] - b[0]:.0f}x{b[3] - b[1]:.0f} px, best IoU {best:.2f}")
    print(f"{folder.name}:{split}: {n_boxes} boxes, {n_pred} detections, {n_tp} matched: recall "
          f"{n_tp / max(n_boxes, 1):.3f}, precision {n_tp / max(n_pred, 1):.3f}")
    print(f"frames without a picture but with boxes: {', '.join(black) or 'none'}")
    if tiles:
        while len(tiles) % 4:
            tiles.append(np.zeros_like(tiles[0]))
        args.out.mkdir(parents=True, exist_ok=True)
        sheet = np.vstack([np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)])
        cv2.imwrite(str(args.out / "unmatched.png"), sheet)
        print(f"unmatched detections: {args.out / 'unmatched.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
