"""Recogniser training can continue from the committed export when no checkpoint was kept."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from anpr.detector import ModelLoadError
from anpr.platerec import preprocess
from anpr.train import DEFAULT_ONNX as DETECTOR_ONNX
from anpr.train_recognizer import DEFAULT_EXPORT
from tests.conftest import DATASETS

needs_model = pytest.mark.skipif(not DEFAULT_EXPORT.is_file(), reason=f"recogniser not present: {DEFAULT_EXPORT}")


def _model_from_export(path: Path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("easyocr")
    from anpr.train_recognizer import build_model_skeleton, onnx_state_dict

    model = build_model_skeleton()
    model.load_state_dict(onnx_state_dict(path))
    return torch, model


def _crops() -> np.ndarray:
    """Three real US val crops as the recogniser's input, plus one of noise."""
    folder = DATASETS / "plate-crops-us" / "images"
    paths = sorted(folder.glob("*.jpg"))[:3] if folder.is_dir() else []
    imgs = [preprocess(cv2.imread(str(p)))[0] for p in paths]
    imgs.append(np.random.default_rng(7).uniform(-1, 1, (64, 256)).astype(np.float32))
    return np.stack(imgs)[:, None]


@needs_model
def test_the_committed_export_rebuilds_into_a_trainable_model_that_computes_the_same() -> None:
    import onnxruntime as ort

    from anpr.platerec import greedy_decode
    from anpr.train_recognizer import Exportable

    torch, model = _model_from_export(DEFAULT_EXPORT)
    x = _crops()
    want = ort.InferenceSession(str(DEFAULT_EXPORT), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        got = Exportable.wrap(model.eval()).eval()(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
    assert [greedy_decode(p)[0] for p in got] == [greedy_decode(p)[0] for p in want]


@needs_model
def test_folded_batchnorms_stay_fixed_while_training() -> None:
    from anpr.train_recognizer import freeze_batchnorm

    torch, model = _model_from_export(DEFAULT_EXPORT)
    x = torch.from_numpy(_crops())
    with torch.no_grad():
        frozen = model.eval()(x, None)
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        before = bn.running_var.clone()
        model.train()
        freeze_batchnorm(model)
        # dropout-free network: in training mode with frozen statistics it computes what eval does
        again = model(x, None)
        assert torch.equal(bn.running_var, before)
        assert torch.allclose(again, frozen, atol=1e-5)
        model.train()  # without the freeze, batch statistics change the function
        assert not torch.allclose(model(x, None), frozen, atol=1e-3)


def test_a_file_that_is_not_a_recogniser_export_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("easyocr")
    from anpr.train_recognizer import onnx_state_dict

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match=r"junk\.onnx"):
        onnx_state_dict(junk)
    if DETECTOR_ONNX.is_file():  # an ONNX model of another network
        with pytest.raises(ModelLoadError, match="gen-2 layout"):
            onnx_state_dict(DETECTOR_ONNX)


def test_synthetic_us_plates_label_only_the_registration() -> None:
    import random

    from anpr.synth_us import registration, render_us_plate
    from anpr.train_recognizer import _FONT_CANDIDATES

    fonts = [f for f in _FONT_CANDIDATES if Path(f).is_file()]
    if not fonts:
        pytest.skip("no TrueType fonts on this machine")
    rng = random.Random(5)
    for _ in range(200):
        groups, label = registration(rng)
        assert "".join(groups) == label and label.isalnum() and label == label.upper() and 3 <= len(label) <= 7
        if len(groups) == 2:  # serials (vanity words print as one group): no I, O or Q
            assert not set(label) & set("IOQ")
    for seed in range(300):  # every drawing option, many times
        render_us_plate(random.Random(seed), fonts)
    a = render_us_plate(random.Random(11), fonts)
    b = render_us_plate(random.Random(11), fonts)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])  # reproducible from the seed
    img, label, (x1, y1, x2, y2) = a
    assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]
    assert (x2 - x1) == 2 * (y2 - y1)  # a US plate is 12 x 6 inches
