"""Detector training inputs: continuing from the committed export, and the synthetic US-plate scenes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from anpr.detector import ModelLoadError, letterbox
from anpr.scene_synth import build_scene_set, crops_of, single_plate_hosts
from anpr.train import DEFAULT_ONNX, combined_data_yaml
from tests.conftest import DATASETS

needs_model = pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason=f"plate detector not present: {DEFAULT_ONNX}")


@needs_model
def test_the_committed_export_rebuilds_into_a_trainable_model_that_computes_the_same(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    import onnxruntime as ort

    from anpr.train import onnx_to_checkpoint

    ckpt = torch.load(onnx_to_checkpoint(DEFAULT_ONNX, tmp_path / "init.pt"), weights_only=False)
    model = ckpt["model"].eval()
    assert model.names == {0: "plate"}
    assert any(p.requires_grad for p in model.parameters())
    row = json.loads((DATASETS / "plates-dev" / "labels.jsonl").read_text().splitlines()[0])
    image = cv2.imread(str(DATASETS / "plates-dev" / row["image"]))
    boxed, _, _ = letterbox(image, (512, 512))
    x = np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    session = ort.InferenceSession(str(DEFAULT_ONNX), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x))[0].numpy()
    assert got.shape == want.shape
    # Boxes in input pixels and class scores: the rebuilt network is the exported function.
    assert np.abs(got - want).max() < 1e-2
    assert np.abs(got[:, 4] - want[:, 4]).max() < 1e-4


@needs_model
def test_an_export_takes_any_frame_shape_and_computes_what_the_committed_model_does(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    import onnxruntime as ort

    from anpr.train import export_onnx

    beside = sorted(DEFAULT_ONNX.parent.iterdir())
    out = export_onnx(DEFAULT_ONNX, 512, tmp_path / "detector.onnx")  # rebuilt from the committed export
    assert sorted(DEFAULT_ONNX.parent.iterdir()) == beside  # nothing left beside the weights
    new = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    old = ort.InferenceSession(str(DEFAULT_ONNX), providers=["CPUExecutionProvider"])
    assert all(isinstance(d, str) for d in new.get_inputs()[0].shape[2:])
    shapes = [(512, 512)]
    if not all(isinstance(d, int) for d in old.get_inputs()[0].shape[2:]):
        shapes.append((384, 704))  # a 16:9 frame's input
    rng = np.random.default_rng(5)
    for h, w in shapes:
        x = rng.random((1, 3, h, w), dtype=np.float32)
        got = new.run(None, {new.get_inputs()[0].name: x})[0]
        want = old.run(None, {old.get_inputs()[0].name: x})[0]
        assert got.shape == want.shape == (1, 5, (h // 8) * (w // 8) + (h // 16) * (w // 16) + (h // 32) * (w // 32))
        assert np.abs(got - want).max() < 1e-2 and np.abs(got[:, 4] - want[:, 4]).max() < 1e-4


def test_a_file_that_is_not_a_detector_export_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from anpr.train import onnx_to_checkpoint

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model" * 20)
    with pytest.raises(ModelLoadError, match=re.escape(str(bad))):
        onnx_to_checkpoint(bad, tmp_path / "init.pt")


def test_training_scenes_carry_the_pasted_plate_and_its_label(tmp_path: Path) -> None:
    hosts = single_plate_hosts(DATASETS / "plates-train", "train", 40.0)
    assert hosts
    val_images = {json.loads(line)["image"] for line in (DATASETS / "plates-train" / "labels.jsonl").read_text()
                  .splitlines() if json.loads(line)["split"] == "val"}
    assert not {str(p.relative_to(DATASETS / "plates-train")) for p, _ in hosts} & val_images
    crops = crops_of(DATASETS / "plate-crops-us", "train")
    assert crops and all(c["split"] == "train" for c in crops)
    n = build_scene_set(tmp_path, hosts, crops[:4], DATASETS / "plate-crops-us", seed=3, widths=(60, 120),
                        count=4, prefix="t", match_host=True)
    assert n == 4
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    listed = (tmp_path / "train.txt").read_text().split()
    assert listed == [f"./{r['image']}" for r in rows]
    for row in rows:
        frame = cv2.imread(str(tmp_path / row["image"]))
        assert frame.shape[:2] == (row["height"], row["width"])
        x1, y1, x2, y2 = row["plates"][0]["box"]
        assert 0 <= x1 < x2 <= row["width"] and 0 <= y1 < y2 <= row["height"]
        assert 55 <= x2 - x1 <= 125
        # The YOLO label is the same box, normalised.
        cls, cx, cy, w, h = map(float, (tmp_path / "labels" / (Path(row["image"]).stem + ".txt")).read_text().split())
        assert cls == 0
        assert np.allclose([cx * row["width"], cy * row["height"], w * row["width"], h * row["height"]],
                           [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], atol=0.5)
        # The box holds the crop: the frame there correlates with the crop (tilt and JPEG aside).
        crop = cv2.imread(str(DATASETS / "plate-crops-us" / row["crop"]), cv2.IMREAD_GRAYSCALE)
        inner = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[int(y1) : int(y2), int(x1) : int(x2)].astype(np.float32)
        ref = cv2.resize(crop, (inner.shape[1], inner.shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
        inner, ref = (cv2.GaussianBlur(a, (0, 0), 3) for a in (inner, ref))  # tolerate the tilt's shift
        assert np.corrcoef(inner.ravel(), ref.ravel())[0, 1] > 0.85, row["image"]  # other plates: < 0.8


def test_synthetic_sets_join_the_training_list_only(tmp_path: Path) -> None:
    extra = tmp_path / "synth"
    extra.mkdir()
    (extra / "train.txt").write_text("./images/a.jpg\n")
    data = yaml.safe_load(combined_data_yaml((DATASETS / "plates-train",), tmp_path, extra_train=(extra,)).read_text())
    assert data["train"][-1] == str((extra / "train.txt").resolve())
    assert all("synth" not in v for v in data["val"])


def test_export_detector_names_a_missing_or_wrong_weights_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    def export(weights: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "baywarden.cli", "anpr", "export-detector", "--weights",
                               str(weights), "--out", str(tmp_path / "out.onnx")], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    r = export(tmp_path / "nope.pt")
    assert r.returncode == 2 and "nope.pt: no such weights file" in r.stderr
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model" * 20)
    r = export(bad)
    assert r.returncode != 0 and str(bad) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.onnx").exists()
