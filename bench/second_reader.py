"""RapidOCR's recogniser models as the ensemble's second reader: raw greedy reads of the val crops.

    python bench/second_reader.py [--datasets ../shared/datasets]

Compares PP-OCRv4 (`rapidocr-onnxruntime`, what the ensemble uses) with PP-OCRv6 small (shipped in the
`rapidocr` 3.x wheel, if installed) on the val splits of plate-crops-us and plate-crops: whole-plate exact
(greedy CTC, separators dropped) and ms per crop on one thread. Both get RapidOCR's own preprocessing
(height 48, aspect kept, [-1, 1]); crops under 48 px high are first upscaled bicubically, as the ensemble does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anpr.ocr import RapidOcrBackend  # noqa: E402
from anpr.plates import normalize  # noqa: E402


def v6_reader(v4: RapidOcrBackend):
    """PP-OCRv6 small's greedy reader, or None when the rapidocr 3.x wheel is not installed."""
    try:
        import rapidocr
    except ImportError:
        return None
    import onnxruntime as ort

    path = Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_rec_small.onnx"
    if not path.is_file():
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    chars = ["", *session.get_modelmeta().custom_metadata_map["character"].split("\n"), " "]
    prep = v4.engine.text_rec.resize_norm_img

    def read(crop: np.ndarray) -> str:
        x = prep(crop, max(320 / 48, crop.shape[1] / crop.shape[0]))[None].astype(np.float32)
        best = session.run(None, {session.get_inputs()[0].name: x})[0][0].argmax(1)
        out = [chars[i] for k, i in enumerate(best) if i and i < len(chars) and (k == 0 or i != best[k - 1])]
        return normalize("".join(out))

    return read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = ap.parse_args()
    v4 = RapidOcrBackend(threads=1)
    v6 = v6_reader(v4)
    readers = {"PP-OCRv4": lambda c: (v4.read(c) or [None])[0]}
    if v6 is not None:
        readers["PP-OCRv6 small"] = v6
    for name in ("plate-crops-us", "plate-crops"):
        folder = args.datasets / name
        rows = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("split") == "val"]
        right = dict.fromkeys(readers, 0)
        spent = dict.fromkeys(readers, 0.0)
        for r in rows:
            crop = cv2.imread(str(folder / r["image"]))
            if crop.shape[0] < 48:
                f = 48 / crop.shape[0]
                crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
            for reader, read in readers.items():
                t = time.perf_counter()
                got = read(crop)
                spent[reader] += time.perf_counter() - t
                text = got if isinstance(got, str) else (got.text if got is not None else "")
                right[reader] += text == r["text"]
        for reader in readers:
            print(f"{name:15} {reader:15} exact {right[reader] / len(rows):.3f}  "
                  f"{1000 * spent[reader] / len(rows):.0f} ms/crop  ({len(rows)} crops)")


if __name__ == "__main__":
    main()
