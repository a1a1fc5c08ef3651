"""Reproducible training of the plate detector with ultralytics (optional `train` extra).

The datasets are read in place (their YOLO `train.txt`/`val.txt` lists); only a small
combined data yaml is written under the run folder, so nothing is copied.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_ONNX = WEIGHTS_DIR / "plate_detector.onnx"


@dataclass(frozen=True)
class TrainOptions:
    datasets: tuple[Path, ...]
    out_dir: Path
    epochs: int = 30
    imgsz: int = 480
    hours: float | None = None
    arch: str = "yolo11n.yaml"
    seed: int = 20240611
    batch: int = 16
    resume: bool = False


def combined_data_yaml(datasets: tuple[Path, ...], out_dir: Path) -> Path:
    """Write one data yaml whose train/val are the lists of every dataset folder."""
    train, val = [], []
    for ds in datasets:
        ds = ds.resolve()
        for name, bucket in (("train.txt", train), ("val.txt", val)):
            path = ds / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: dataset folder has no {name} (YOLO export)")
            bucket.append(str(path))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "data.yaml"
    target.write_text(yaml.safe_dump({"train": train, "val": val, "nc": 1, "names": {0: "plate"}}))
    return target


def train_detector(opts: TrainOptions) -> Path:
    """Train, export to ONNX and return the path of the exported model."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(opts.out_dir / "yolo-config"))
    from ultralytics import YOLO  # optional dependency: imported only when training

    data = combined_data_yaml(opts.datasets, opts.out_dir)
    last = opts.out_dir / "run" / "weights" / "last.pt"
    if opts.resume and last.is_file():
        model = YOLO(str(last))
        model.train(resume=True)
    else:
        model = YOLO(opts.arch)
        model.train(
            data=str(data),
            epochs=opts.epochs,
            time=opts.hours,
            imgsz=opts.imgsz,
            batch=opts.batch,
            device="cpu",
            amp=False,
            plots=False,
            workers=0,
            cache="ram",
            seed=opts.seed,
            deterministic=True,
            project=str(opts.out_dir),
            name="run",
            exist_ok=True,
            patience=0,
            verbose=True,
        )
    best = opts.out_dir / "run" / "weights" / "best.pt"
    return export_onnx(best if best.is_file() else last, opts.imgsz)


def export_onnx(weights: Path, imgsz: int, target: Path = DEFAULT_ONNX) -> Path:
    """Export a trained .pt to ONNX (opset 17, static shape) and copy it to `target`."""
    from ultralytics import YOLO

    exported = Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, opset=17, simplify=True, dynamic=False))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exported, target)
    return target
