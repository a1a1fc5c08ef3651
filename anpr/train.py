"""Reproducible training of the plate detector with ultralytics (optional `train` extra).

The datasets are read in place (their YOLO `train.txt`/`val.txt` lists); only a small
combined data yaml is written under the run folder, so nothing is copied.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from anpr.detector import ModelLoadError

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
    init: Path | None = None  # start from these weights (.pt, or an exported .onnx such as the committed one)
    synth_us: int = 0  # add this many scenes with a plate-crops-us train crop pasted on a train-split car
    lr0: float | None = None  # None: ultralytics' choice; a fine-tune from --init wants a smaller one
    warmup_epochs: float = 3.0
    close_mosaic: int = 10  # last epochs without mosaic (ultralytics' default 10)


def combined_data_yaml(datasets: tuple[Path, ...], out_dir: Path, extra_train: tuple[Path, ...] = ()) -> Path:
    """Write one data yaml whose train/val are the lists of every dataset folder (and the train lists of
    `extra_train`, synthetic sets that have no val split)."""
    train, val = [], []
    for ds in datasets:
        ds = ds.resolve()
        for name, bucket in (("train.txt", train), ("val.txt", val)):
            path = ds / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: dataset folder has no {name} (YOLO export)")
            bucket.append(str(path))
    train += [str((ds / "train.txt").resolve()) for ds in extra_train]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "data.yaml"
    target.write_text(yaml.safe_dump({"train": train, "val": val, "nc": 1, "names": {0: "plate"}}))
    return target


def onnx_to_checkpoint(onnx_path: Path, out: Path, arch: str = "yolo11n.yaml") -> Path:
    """Rebuild a trainable ultralytics checkpoint from an exported detector, so training can continue
    from the committed model when its .pt is gone.

    The export fuses every batch norm into its convolution (weight and bias); each fused convolution is
    loaded as the convolution of `arch` followed by an identity batch norm (scale 1, mean 0, variance
    1 - eps, shift = the fused bias), which computes exactly the exported function and trains again.
    """
    import onnx
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.tasks import DetectionModel

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:  # any parse failure means the same thing to the caller
        raise ModelLoadError(f"{onnx_path}: not a readable ONNX model ({exc})") from exc
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    model = DetectionModel(arch, nc=1, verbose=False)
    state, loaded, modules = model.state_dict(), {}, dict(model.named_modules())
    for key, value in state.items():
        if ".bn." in key:
            conv, leaf = key.split(".bn.")
            bias = init.get(conv + ".conv.bias")
            if bias is None:
                raise ModelLoadError(f"{onnx_path}: no fused bias for {conv} (not an export of {arch})")
            eps = modules[conv + ".bn"].eps
            loaded[key] = {
                "weight": torch.ones_like(value),
                "bias": torch.from_numpy(bias.copy()).to(value.dtype),
                "running_mean": torch.zeros_like(value),
                "running_var": torch.full_like(value, 1.0 - eps),
            }.get(leaf, value)
        elif key in init:
            if tuple(init[key].shape) != tuple(value.shape):
                want = tuple(value.shape)
                raise ModelLoadError(f"{onnx_path}: {key} has shape {init[key].shape}, {arch} wants {want}")
            loaded[key] = torch.from_numpy(init[key].copy()).to(value.dtype)
        elif key.endswith("num_batches_tracked"):
            loaded[key] = value
        else:
            raise ModelLoadError(f"{onnx_path}: no weights for {key} (not an export of {arch})")
    model.load_state_dict(loaded)
    model.names = {0: "plate"}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": {}, "epoch": -1, "optimizer": None, "ema": None}, out)
    return out


def synth_scene_dataset(datasets: tuple[Path, ...], crops_root: Path, out_dir: Path, count: int,
                        seed: int) -> Path:
    """Training scenes with US plates (see `anpr.scene_synth`): train-split crops of `crops_root` on the
    train-split cars of `datasets`, 40-140 px wide. Returns the folder (YOLO `train.txt` inside)."""
    from anpr.scene_synth import build_scene_set, crops_of, single_plate_hosts

    hosts = [h for ds in datasets if (ds / "labels.jsonl").is_file() for h in single_plate_hosts(ds, "train", 40.0)]
    target = out_dir / "synth-us"
    if (target / "train.txt").is_file() and len((target / "train.txt").read_text().splitlines()) == count:
        return target  # a resumed run keeps the scenes it started with
    crops = crops_of(crops_root, "train")
    random.Random(seed).shuffle(crops)  # every state, not the first N crops in file order
    build_scene_set(target, hosts, crops, crops_root, seed=seed, widths=(40, 140),
                    count=count, prefix="synth_us", match_host=True,
                    source="synthetic: plate-crops-us train on train-split cars")
    return target


def train_detector(opts: TrainOptions) -> Path:
    """Train, export to ONNX and return the path of the exported model."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(opts.out_dir / "yolo-config"))
    from ultralytics import YOLO  # optional dependency: imported only when training

    extra: tuple[Path, ...] = ()
    if opts.synth_us:
        beside = [ds.parent / "plate-crops-us" for ds in opts.datasets]
        crops = next((c for c in beside if c.is_dir()), None)
        if crops is None:
            raise FileNotFoundError("--synth-us needs plate-crops-us beside the --data folders")
        extra = (synth_scene_dataset(opts.datasets, crops, opts.out_dir, opts.synth_us, opts.seed),)
    data = combined_data_yaml(opts.datasets, opts.out_dir, extra_train=extra)
    # An absolute project folder: ultralytics puts a relative one under its own runs/detect/.
    run_dir = opts.out_dir.resolve() / "run"
    last = run_dir / "weights" / "last.pt"
    if opts.resume and last.is_file():
        model = YOLO(str(last))
        model.train(resume=True)
    else:
        start = opts.arch
        if opts.init is not None:
            start = str(opts.init)
            if opts.init.suffix == ".onnx":
                start = str(onnx_to_checkpoint(opts.init, opts.out_dir / "init.pt", opts.arch))
        model = YOLO(start)
        tuning = {"lr0": opts.lr0} if opts.lr0 is not None else {}
        if opts.lr0 is not None:
            tuning["optimizer"] = "AdamW"  # 'auto' would ignore lr0
        model.train(
            warmup_epochs=opts.warmup_epochs,
            close_mosaic=opts.close_mosaic,
            **tuning,
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
            project=str(run_dir.parent),
            name="run",
            exist_ok=True,
            patience=0,
            verbose=True,
        )
    best = run_dir / "weights" / "best.pt"
    return export_onnx(best if best.is_file() else last, opts.imgsz)


def export_onnx(weights: Path, imgsz: int, target: Path = DEFAULT_ONNX) -> Path:
    """Export trained weights (.pt, or an earlier .onnx export, rebuilt by `onnx_to_checkpoint`) to ONNX
    (opset 17) with a dynamic height and width, and copy it to `target`. `anpr.detector` feeds a large
    frame at its own shape within the pixel budget of an `imgsz` square, a small one in that square."""
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        if weights.suffix == ".onnx":
            weights = onnx_to_checkpoint(weights, Path(tmp) / "rebuilt.pt")
        exported = Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, opset=17, simplify=True, dynamic=True))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exported, target)
    return target
