"""Build a stand-in for the private US photo set: real scenes carrying US plates at the private set's scale.

    python bench/us_scenes.py [--out runs/us-scenes] [--split val] [--seed 7] [--limit N] [--size 1280x720]
                              [--hosts dev|train]
    baywarden anpr eval --dataset runs/us-scenes --json

Every crop of `plate-crops-us` (the chosen split) is pasted over the plate of a real car photo of
`plates-dev` (European, 108 photos, used as hosts in turn): the host is scaled so that its own plate
would be about 1.7 times the width of the US plate (an EU plate is 520 mm wide, a US one 305 mm), a
1280x720 window around the plate is cut (`--size`: the private set's frames are 1280x720 to 1600x900),
the old plate is painted out, and the US crop is pasted at 60-100 px wide (the private set's range)
with a slight perspective tilt; the frame is saved as JPEG quality 85. The result is a scene set in
the datasets' format (`labels.jsonl` with boxes and texts), so `anpr eval` measures detection and
reading together, as the private set does.

`--hosts train` pastes onto the train-split cars of plates-train instead (robertlucian and openalpr-br
photos whose plate is at least 60 px wide): with `--split val` a pipeline-level choosing set whose plates
the recogniser never trained on and whose cars are not the stand-in's.

It is a diagnostic, not a benchmark to tune on: the plates are the val crops that chose the recogniser's
checkpoint, and a pasted crop is cleaner than a photographed plate (no shared lighting, sharp edges).
The output is derived from AGPL-3.0 photos (see ../shared/datasets/README.md) and is not committed.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import cv2

from anpr.scene_synth import H, W, paste_plate, single_plate_hosts

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def _hosts(datasets: Path, kind: str = "dev") -> list[tuple[Path, tuple[float, float, float, float]]]:
    if kind == "train":
        # the train-split cars of plates-train (plates at least 60 px wide, so the host is not blown up)
        return single_plate_hosts(datasets / "plates-train", "train", min_width=60.0)
    out = []
    for line in (datasets / "plates-dev" / "labels.jsonl").read_text().splitlines():
        row = json.loads(line)
        if len(row["plates"]) == 1:
            out.append((datasets / "plates-dev" / row["image"], tuple(row["plates"][0]["box"])))
    return out


def build(out: Path, split: str, seed: int, datasets: Path = DATASETS, limit: int | None = None,
          size: tuple[int, int] = (W, H), hosts_from: str = "dev") -> int:
    rng = random.Random(seed)
    hosts = _hosts(datasets, hosts_from)
    crops = [json.loads(line) for line in (datasets / "plate-crops-us" / "labels.jsonl").read_text().splitlines()]
    crops = [c for c in crops if c.get("split") == split][:limit]
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, c in enumerate(crops):
        host_path, box = hosts[i % len(hosts)]
        host = cv2.imread(str(host_path))
        crop = cv2.imread(str(datasets / "plate-crops-us" / c["image"]))
        if host is None or crop is None:
            continue
        frame, pbox = paste_plate(host, box, crop, rng.randint(60, 100), rng, size)
        name = f"images/us_scene_{i:03d}.jpg"
        cv2.imwrite(str(out / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        rows.append({"image": name, "width": size[0], "height": size[1], "plates": [{"box": pbox, "text": c["text"]}],
                     "source": f"synthetic: plate-crops-us on plates-{hosts_from}", "licence": "AGPL-3.0",
                     "host": host_path.name, "crop": c["image"], "split": split})
    (out / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "us-scenes")
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--limit", type=int, default=None, help="only the first N crops")
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--size", default=f"{W}x{H}", help="frame width x height, e.g. 1600x900")
    ap.add_argument("--hosts", choices=("dev", "train"), default="dev",
                    help="host cars: plates-dev (the held-out stand-in) or plates-train's train split (a choosing set)")
    args = ap.parse_args()
    try:
        fw, fh = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size wants WIDTHxHEIGHT, got {args.size!r}")
    n = build(args.out, args.split, args.seed, args.datasets, args.limit, (fw, fh), args.hosts)
    print(f"{n} scenes in {args.out}")


if __name__ == "__main__":
    main()
