"""A scene set at a smaller frame size (camera sub-streams, bay ROIs): images scaled, boxes with them.

    python bench/shrink_scenes.py --dataset ../shared/datasets/plates-train:val --side 640 --out runs/ptv-640
    python bench/shrink_scenes.py --dataset runs/us-scenes-vt:all --side 800 --out runs/us-scenes-vt-800

Every image of the chosen split is scaled (INTER_AREA) so that its longer side is `--side` px and saved
as JPEG quality 92 under `OUT/images/`; `OUT/labels.jsonl` keeps each row with its boxes scaled and
`split` set to `val`, so `baywarden anpr eval --dataset OUT` reads it whole. Used as choosing sets for
what the pipeline does with frames that enter the detector nearly at its own size (see the weights
README, "Windows on small frames"); never give it a held-out set to choose on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anpr.evaluate import load_labels, parse_dataset_spec, select_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="DIR[:split] of a scene set (labels.jsonl with boxes)")
    ap.add_argument("--side", type=int, required=True, help="longer side of every output image, px")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.side < 32:
        raise SystemExit("--side must be at least 32 px")
    folder, split = parse_dataset_spec(args.dataset)
    rows, _ = select_split(load_labels(folder), split)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    out_rows = []
    for row in rows:
        image = cv2.imread(str(folder / row["image"]))
        if image is None:
            raise SystemExit(f"{folder / row['image']}: cannot read image")
        h, w = image.shape[:2]
        s = args.side / max(h, w)
        image = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        name = "images/" + Path(row["image"]).name
        cv2.imwrite(str(args.out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        plates = [dict(p, box=[v * s for v in p["box"]]) for p in row["plates"]]
        out_rows.append(dict(row, image=name, width=image.shape[1], height=image.shape[0], split="val", plates=plates))
    (args.out / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out_rows))
    print(f"{args.out}: {len(out_rows)} images, longer side {args.side} px")


if __name__ == "__main__":
    main()
