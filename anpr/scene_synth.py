"""Camera-like scenes made from real photos: a plate crop pasted over the painted-out plate of a real car.

Used twice, on disjoint data: `bench/us_scenes.py` builds the US stand-in for evaluation (val crops of
`plate-crops-us` on `plates-dev` cars), and `baywarden anpr train-detector --synth-us N` adds training
scenes (train crops on train-split cars of `plates-train` and `plates-train-extra`) so that the detector
sees small plates of US designs, which none of its real training photos carry.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np

Box = tuple[float, float, float, float]
W, H = 1280, 720


def paint_out(frame: np.ndarray, box: Box) -> np.ndarray:
    """`frame` with the plate in `box` (frame pixels) inpainted from its surroundings, 3 px beyond its edges."""
    fh, fw = frame.shape[:2]
    ox1, oy1 = max(0, int(box[0])), max(0, int(box[1]))
    ox2, oy2 = min(fw, int(box[2]) + 1), min(fh, int(box[3]) + 1)
    if ox2 <= ox1 or oy2 <= oy1:
        return frame
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[max(0, oy1 - 3) : oy2 + 3, max(0, ox1 - 3) : ox2 + 3] = 255
    return cv2.inpaint(frame, mask, 5, cv2.INPAINT_TELEA)


def paste_plate(host: np.ndarray, box: Box, crop: np.ndarray, width: int, rng: random.Random,
                size: tuple[int, int] = (W, H)) -> tuple[np.ndarray, list[float]]:
    """A `size` (w, h) window of `host` around its plate `box`, that plate painted out and `crop` pasted
    in its place `width` px wide with a slight perspective tilt. Returns the frame and the new plate box."""
    fw, fh = size
    x1, y1, x2, y2 = box
    # An EU plate is 520 mm wide, a US one 305 mm: scale the car so its own plate is 1.7x the new one.
    scale = 1.7 * width / max(1.0, x2 - x1)
    scale = max(scale, fw / host.shape[1], fh / host.shape[0])  # the window must fit in the scaled host
    img = cv2.resize(host, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    bx1, by1, bx2, by2 = (v * scale for v in box)
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    left = int(np.clip(cx - rng.uniform(0.2, 0.8) * fw, 0, img.shape[1] - fw))
    top = int(np.clip(cy - rng.uniform(0.3, 0.8) * fh, 0, img.shape[0] - fh))
    frame = img[top : top + fh, left : left + fw].copy()
    cx, cy = cx - left, cy - top
    frame = paint_out(frame, (bx1 - left, by1 - top, bx2 - left, by2 - top))  # the host's own plate must not show
    height = round(width * crop.shape[0] / crop.shape[1])
    # The plate's far side a little shorter, as seen from a pole beside the bay.
    src = np.float32([[0, 0], [crop.shape[1], 0], [crop.shape[1], crop.shape[0]], [0, crop.shape[0]]])
    skew = rng.uniform(-0.08, 0.08) * height
    px, py = cx - width / 2, cy - height / 2
    dst = np.float32([[px, py + max(0, skew)], [px + width, py + max(0, -skew)],
                      [px + width, py + height - max(0, -skew)], [px, py + height - max(0, skew)]])
    m = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(crop, m, (fw, fh), flags=cv2.INTER_AREA)
    alpha = cv2.warpPerspective(np.full(crop.shape[:2], 255, np.uint8), m, (fw, fh), flags=cv2.INTER_LINEAR)
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    frame = (frame * (1 - a) + warped * a).astype(np.uint8)
    xs, ys = dst[:, 0], dst[:, 1]
    out = [max(0.0, float(xs.min())), max(0.0, float(ys.min())), min(float(fw), float(xs.max())),
           min(float(fh), float(ys.max()))]
    return frame, [round(v, 2) for v in out]


def single_plate_hosts(folder: Path, split: str | None, min_width: float = 20.0) -> list[tuple[Path, Box]]:
    """Photos of a scene dataset (`labels.jsonl`) with exactly one plate box, of `split` (None: all)."""
    out = []
    for line in (folder / "labels.jsonl").read_text().splitlines():
        row = json.loads(line)
        if split is not None and row.get("split") != split:
            continue
        if len(row["plates"]) == 1:
            x1, y1, x2, y2 = row["plates"][0]["box"]
            if x2 - x1 >= min_width:  # a plate too small would have to be blown up into a blur
                out.append((folder / row["image"], (x1, y1, x2, y2)))
    return out


def crops_of(folder: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def build_scene_set(out: Path, hosts: list[tuple[Path, Box]], crops: list[dict], crop_root: Path, *,
                    seed: int, widths: tuple[int, int] = (60, 100), count: int | None = None,
                    prefix: str = "us_scene", source: str = "synthetic", split: str = "train",
                    match_host: bool = False) -> int:
    """Write `count` scenes (default: one per crop) to `out` in the datasets' layout: `images/`,
    `labels.jsonl` (boxes and texts), and the YOLO export (`labels/*.txt`, `train.txt`) for training."""
    if not hosts or not crops:
        raise ValueError("no host photos or no crops to build scenes from")
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rows, names = [], []
    order = list(range(len(hosts)))
    rng.shuffle(order)
    target = count if count is not None else len(crops)
    for i in range(10 * target):
        if len(rows) == target:
            break
        c = crops[len(rows) % len(crops)]
        host_path, box = hosts[order[i % len(order)]]
        host = cv2.imread(str(host_path))
        crop = cv2.imread(str(crop_root / c["image"]))
        if host is None or crop is None:
            continue
        width = rng.randint(*widths)
        if match_host:
            # A host smaller than the frame is scaled up to fill it; its painted-out plate must then stay
            # about 1.7x the pasted one, or a large blank patch would surround a small plate.
            fit = max(W / host.shape[1], H / host.shape[0])
            least = (box[2] - box[0]) * fit / 1.7
            if least > widths[1]:
                continue
            width = max(width, round(least))
        frame, pbox = paste_plate(host, box, crop, width, rng)
        n = len(rows)
        name = f"images/{prefix}_{n:04d}.jpg"
        cv2.imwrite(str(out / name), frame, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(70, 92)])
        x1, y1, x2, y2 = pbox
        (out / "labels" / f"{prefix}_{n:04d}.txt").write_text(
            f"0 {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}\n")
        rows.append({"image": name, "width": W, "height": H, "plates": [{"box": pbox, "text": c["text"]}],
                     "source": source, "licence": "AGPL-3.0", "host": host_path.name, "crop": c["image"],
                     "split": split})
        names.append(f"./{name}")
    (out / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "train.txt").write_text("".join(n + "\n" for n in names))
    return len(rows)
