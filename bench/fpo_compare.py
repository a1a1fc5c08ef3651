"""fast-plate-ocr (CCT, trained here) against the committed plate recogniser, on the val crops.

Issue 14 asks for `fast-plate-ocr`'s trainer unless something else measures better. Its published
models cannot be downloaded here, so this trains one of its CCT models on our data and compares it
with `anpr/weights/plate_recognizer.onnx` (the `platerec` backend) on the same crops:

    python bench/fpo_compare.py prepare --out runs/fpo          # data: train splits only
    KERAS_BACKEND=torch fast-plate-ocr train --model-config-file bench/fpo/cct_model.yaml \
        --plate-config-file bench/fpo/plate_config.yaml --annotations runs/fpo/train.csv \
        --val-annotations runs/fpo/val.csv --epochs 4 --batch-size 64 --output-dir runs/fpo/out
    KERAS_BACKEND=torch fast-plate-ocr export --model runs/fpo/out/<run>/ckpt-epoch_<n>-*.keras \
        --plate-config-file bench/fpo/plate_config.yaml --format onnx --no-dynamic-batch
    python bench/fpo_compare.py eval --model runs/fpo/out/<run>/<model>.onnx

`prepare` writes what our own trainer feeds its model, fixed instead of drawn per epoch: each train
crop of plate-crops, plate-crops-us and the labelled boxes of plates-train (split `train`), once as it is
and `--copies` times degraded the way `anpr.train_recognizer` degrades crops (box jitter, perspective,
low resolution, blur, JPEG, glare, IR grey), plus synthetic EU-like and US plates. The val CSV holds the
val crops of plate-crops and plate-crops-us, untouched: fast-plate-ocr picks its checkpoint on them, as
our trainer picks its epoch. `eval` prints exact (and O=0) per set and ms per crop for both readers.
fast-plate-ocr's training extra (keras 3 with the torch backend, albumentations, pandas, click) is not
one of Baywarden's dependencies; install it beside them to train.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anpr.plates import normalize
from anpr.train_recognizer import (
    _FONT_CANDIDATES,
    Sample,
    _jitter_crop,
    augment,
    load_crops,
    load_photo_boxes,
    render_synthetic,
)

ROOT = Path(__file__).resolve().parent.parent
VAL_SETS = ("plate-crops", "plate-crops-us")


def _grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "plate_text"])  # fast-plate-ocr's annotation columns
        w.writerows(rows)


def prepare(args: argparse.Namespace) -> None:
    from anpr.synth_us import render_us_plate

    root, out = args.data_root, args.out
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "val").mkdir(parents=True, exist_ok=True)
    samples = [*load_crops(root / "plate-crops", "train"), *load_crops(root / "plate-crops-us", "train"),
               *load_photo_boxes(root / "plates-train", "train")]
    fonts = [f for f in _FONT_CANDIDATES if Path(f).exists()]
    rnd = random.Random(args.seed)
    samples += [render_synthetic(rnd, fonts) for _ in range(args.synthetic)]
    samples += [Sample(*render_us_plate(rnd, fonts), "synthetic-us") for _ in range(args.synthetic_us)]
    rng = np.random.default_rng(args.seed)
    rows = []
    for i, s in enumerate(samples):
        clean = _jitter_crop(s, rng, False)
        views = [clean] + [augment(_jitter_crop(s, rng, True), rng) for _ in range(args.copies)]
        for k, img in enumerate(views):
            name = f"train/{i:05d}_{k}.png"
            cv2.imwrite(str(out / name), _grey(img))
            rows.append((name, normalize(s.text)))
    _write_csv(out / "train.csv", rows)
    val = []
    for name in VAL_SETS:
        for j, s in enumerate(load_crops(root / name, "val")):
            path = f"val/{name}_{j:04d}.png"
            cv2.imwrite(str(out / path), _grey(s.image))
            val.append((path, normalize(s.text)))
    _write_csv(out / "val.csv", val)
    print(json.dumps({"train_images": len(rows), "samples": len(samples), "val_images": len(val)}))


class FpoReader:
    """A fast-plate-ocr ONNX export read with onnxruntime: grey 64x128 uint8 NHWC in, one
    softmax per character slot out; the pad character ends the plate."""

    def __init__(self, model: Path, plate_config: Path) -> None:
        import onnxruntime as ort
        import yaml

        cfg = yaml.safe_load(plate_config.read_text())
        self.alphabet, self.pad = cfg["alphabet"], cfg["pad_char"]
        self.h, self.w, self.slots = cfg["img_height"], cfg["img_width"], cfg["max_plate_slots"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        self.sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def read(self, crop: np.ndarray) -> tuple[str, float]:
        x = cv2.resize(_grey(crop), (self.w, self.h), interpolation=cv2.INTER_LINEAR)[None, :, :, None]
        probs = self.sess.run(None, {self.input: x})[0].reshape(self.slots, len(self.alphabet))
        idx = probs.argmax(axis=1)
        text = "".join(self.alphabet[i] for i in idx).replace(self.pad, "")
        return text, float(np.prod(probs.max(axis=1)))


def evaluate(args: argparse.Namespace) -> None:
    from anpr.ocr import make_ocr

    fpo = FpoReader(args.model, args.plate_config)
    platerec = make_ocr("platerec")

    def platerec_text(crop: np.ndarray) -> str:
        reads = platerec.read(crop)
        return normalize(max(reads, key=lambda r: r.confidence).text) if reads else ""

    result: dict[str, dict] = {}
    for name in VAL_SETS:
        crops = load_crops(args.data_root / name, "val")
        figures: dict[str, dict] = {}
        for reader, fn in (("fast-plate-ocr", lambda c: fpo.read(c)[0]), ("platerec", platerec_text)):
            fn(crops[0].image)  # warm-up
            t0 = time.perf_counter()
            reads = [fn(s.image) for s in crops]
            ms = (time.perf_counter() - t0) * 1000 / len(crops)
            labels = [normalize(s.text) for s in crops]
            exact = sum(r == t for r, t in zip(reads, labels, strict=True)) / len(crops)
            o0 = sum(r.replace("O", "0") == t.replace("O", "0")
                     for r, t in zip(reads, labels, strict=True)) / len(crops)
            figures[reader] = {"exact": round(exact, 3), "exact_o_eq_0": round(o0, 3), "ms_per_crop": round(ms, 1)}
        result[name] = {"crops": len(crops), **figures}
        print(name, json.dumps(result[name]))
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "fpo")
    p.add_argument("--copies", type=int, default=8, help="degraded copies of each train crop")
    p.add_argument("--synthetic", type=int, default=1500, help="synthetic EU-like plates")
    p.add_argument("--synthetic-us", type=int, default=1000, help="synthetic US plates (anpr.synth_us)")
    p.add_argument("--seed", type=int, default=20261207)
    e = sub.add_parser("eval")
    e.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "datasets")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--plate-config", type=Path, default=ROOT / "bench" / "fpo" / "plate_config.yaml")
    args = ap.parse_args()
    prepare(args) if args.cmd == "prepare" else evaluate(args)


if __name__ == "__main__":
    main()
