"""How many cameras one machine can watch: per-core rates of each stage, then a camera budget.

    python bench/anpr_throughput.py [--clip test-artifacts/fixtures/bay_arrival_v3.mp4] [--seconds 4] [--stream-fps 15]

Every stage runs on one thread (OpenCV, onnxruntime), so each figure is frames (or plates) per
second *per core*. Costs are CPU seconds (`time.process_time`), which stay meaningful on a machine
shared with other jobs; wall-clock rates are printed beside them.

Stages: H.264 decode of the clip; the motion gate; plate *detection* on the bay region (the
project's ONNX plate detector when `anpr/weights/plate_detector.onnx` exists, otherwise RapidOCR's
text detector, the stand-in proposer that `PlateRecognizer` falls back to); plate *OCR* per plate
(the project's `PlateRecognizer.read_box` with its crop variants when importable, and one
RapidOCR recognition of one crop).

Camera budget with parked cars (motion gate on): every stream frame is decoded, `--process-fps`
frames a second go through the gate, and each bay costs one detection + one OCR per
`--check-interval` seconds. Arrivals and departures cost more for a few seconds; `--busy-share`
adds that as a share of time each bay spends with motion.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/onnxruntime load their thread pools

import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anpr.motion import MotionGate, MotionOptions  # noqa: E402

CLIP_BAY = [(200.0, 200.0), (780.0, 200.0), (780.0, 640.0), (200.0, 640.0)]  # fixtures/make_fixtures.py
PLATE_BOX = (378.0, 434.0, 594.0, 487.0)  # fixtures/make_fixtures.py PLATE_BOX: the parked plate in the clip


def timed(fn: Callable[[], object], seconds: float, min_runs: int = 3) -> tuple[float, float, int]:
    """Run fn repeatedly for about `seconds`; return (cpu s per call, wall s per call, calls)."""
    fn()  # warm-up: first ONNX runs allocate
    n, c0, w0 = 0, time.process_time(), time.perf_counter()
    while n < min_runs or time.perf_counter() - w0 < seconds:
        fn()
        n += 1
    return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n, n


def read_frames(clip: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    if not frames:
        raise SystemExit(f"cannot read {clip}")
    return frames


def bench_decode(clip: Path, seconds: float) -> tuple[float, float]:
    """CPU and wall seconds per decoded frame (decoder in a fresh capture, one thread)."""
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    n, c0, w0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - w0 < seconds:
        ok, _ = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
            continue
        n += 1
    cap.release()
    return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n


def line(name: str, cpu: float, wall: float, unit: str = "frames") -> None:
    rate = f"{1 / cpu:8.1f} {unit}/s per core"
    print(f"  {name:<46} {rate}   ({cpu * 1000:7.1f} ms CPU, {wall * 1000:7.1f} ms wall)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=REPO / "test-artifacts" / "fixtures" / "bay_arrival_v3.mp4",
                    help="the camera tests' clip (python fixtures/make_fixtures.py --name bay_arrival_v3.mp4)")
    ap.add_argument("--seconds", type=float, default=4.0, help="time spent on each stage")
    ap.add_argument("--stream-fps", type=float, default=15.0, help="frames/s the camera sends (all decoded)")
    ap.add_argument("--process-fps", type=float, default=5.0, help="frames/s the worker takes (camera fps)")
    ap.add_argument("--check-interval", type=float, default=10.0, help="motion gate look at a still bay, s")
    ap.add_argument("--bays", type=int, default=2, help="bays per camera")
    ap.add_argument("--busy-share", type=float, default=0.02, help="share of time a bay sees motion")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores given to the cameras")
    ap.add_argument("--ocr", default="ensemble", help="plate reader (ensemble, rapidocr, platerec, easyocr)")
    ap.add_argument("--region", default="generic", help="plate region(s) of the ensemble")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    frames = read_frames(args.clip)
    parked = frames[min(len(frames) - 1, 8 * 15)]  # 8 s into the clip: the car is parked
    xs, ys = [p[0] for p in CLIP_BAY], [p[1] for p in CLIP_BAY]
    roi = np.ascontiguousarray(
        parked[int(min(ys)) - 24 : int(max(ys)) + 24, int(min(xs)) - 24 : int(max(xs)) + 24]
    )
    off = (min(xs) - 24, min(ys) - 24)
    plate_in_roi = (
        PLATE_BOX[0] - off[0],
        PLATE_BOX[1] - off[1],
        PLATE_BOX[2] - off[0],
        PLATE_BOX[3] - off[1],
    )
    h, w = parked.shape[:2]
    print(f"clip {args.clip.name}: {w}x{h}; bay region {roi.shape[1]}x{roi.shape[0]}; one thread per stage")
    load = os.getloadavg()[0]
    print(f"cpu: {os.cpu_count()} cores, load average {load:.2f} (other jobs inflate the wall times)")

    print("stages")
    dec_cpu, dec_wall = bench_decode(args.clip, args.seconds)
    line(f"decode H.264 {w}x{h}", dec_cpu, dec_wall)
    gate = MotionGate([("B1", CLIP_BAY)], MotionOptions())
    it = iter(range(10**9))
    mot_cpu, mot_wall, _ = timed(lambda: gate.due(frames[next(it) % len(frames)], 0.0), args.seconds)
    line("motion gate (grey diff in the bay)", mot_cpu, mot_wall)

    # detection
    det_name, det_fn = None, None
    weights = REPO / "anpr" / "weights" / "plate_detector.onnx"
    if weights.is_file():
        try:
            from anpr.detector import OnnxPlateDetector

            det = OnnxPlateDetector(weights, threads=1)
            det_name, det_fn = "plate detector ONNX (project)", lambda: det.detect(roi)
        except Exception as exc:
            print(f"  (project detector present but not usable: {exc})")
    if det_fn is None:
        from rapidocr_onnxruntime import RapidOCR

        engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
        det_name = "text detector RapidOCR DBNet (stand-in)"
        det_fn = lambda: engine.text_det(roi)  # noqa: E731
        print(f"  note: {weights.relative_to(REPO)} not found: detection measured with the stand-in")
    det_cpu, det_wall, _ = timed(det_fn, args.seconds)
    line(f"detection: {det_name}", det_cpu, det_wall)

    # OCR per plate
    ocr_cpu = None
    try:
        from anpr.ocr import RapidOcrBackend
        from anpr.recognizer import make_recognizer

        backend = RapidOcrBackend(threads=1)
        rec = make_recognizer(ocr=args.ocr, detector="none", proposer="none", threads=1, text_proposals="off",
                              region=args.region)
        read = rec.read_box(roi, plate_in_roi)
        crop = roi[int(plate_in_roi[1]) : int(plate_in_roi[3]), int(plate_in_roi[0]) : int(plate_in_roi[2])]
        c1, w1, _ = timed(lambda: backend.read(crop), args.seconds)
        line("OCR: RapidOCR recogniser, one crop", c1, w1, "plates")
        ocr_cpu, ocr_wall, _ = timed(lambda: rec.read_box(roi, plate_in_roi), args.seconds)
        variants = ",".join(rec.variants)
        line(f"OCR: PlateRecognizer.read_box, {args.ocr} ({len(rec.variants)} crops)", ocr_cpu, ocr_wall, "plates")
        print(f"  (read_box on the parked plate -> {read.text if read else None!r}; crops: {variants})")
    except Exception as exc:  # the project recogniser is being written; fall back to the library
        print(f"  note: project OCR not usable ({type(exc).__name__}: {exc}); using RapidOCR directly")
        from rapidocr_onnxruntime import RapidOCR

        engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
        crop = roi[int(plate_in_roi[1]) : int(plate_in_roi[3]), int(plate_in_roi[0]) : int(plate_in_roi[2])]
        ocr_cpu, ocr_wall, _ = timed(
            lambda: engine(crop, use_det=False, use_cls=False, use_rec=True), args.seconds
        )
        line("OCR: RapidOCR recogniser, one crop", ocr_cpu, ocr_wall, "plates")

    # camera budget
    recog = det_cpu + ocr_cpu
    looks = args.bays * (1 / args.check_interval + args.busy_share * args.process_fps)
    per_cam = args.stream_fps * dec_cpu + args.process_fps * mot_cpu + looks * recog
    print("camera budget (parked cars, motion gating on)")
    print(
        f"  per camera: decode {args.stream_fps:g} fps x {dec_cpu * 1000:.1f} ms"
        f" + gate {args.process_fps:g} fps x {mot_cpu * 1000:.2f} ms"
        f" + {looks:.2f} recognitions/s x {recog * 1000:.0f} ms = "
        f"{per_cam * 1000:.0f} ms CPU per second"
    )
    print(f"  cameras at {args.process_fps:g} fps per core: {1 / per_cam:.1f}")
    print(f"  cameras at {args.process_fps:g} fps on {args.cores} cores: {int(args.cores / per_cam)}")
    no_gate = args.stream_fps * dec_cpu + args.process_fps * recog
    print(f"  without the motion gate (recognise every processed frame): {args.cores / no_gate:.1f} cameras")


if __name__ == "__main__":
    main()
