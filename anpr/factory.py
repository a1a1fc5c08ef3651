"""Building the configured recogniser inside a worker process (the spec pickles; models do not)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from anpr.types import Recognizer
from models.settings import DEFAULT_CONFIRMATION_THRESHOLD, AnprSettings, CameraSettings


@dataclass(frozen=True)
class RecognizerSpec:
    """A picklable recipe for the recogniser: the supervisor sends it to each spawned worker."""

    detector: str = "onnx"
    detector_path: Path | None = None
    ocr: str = "ensemble"
    formats: str = "eu"
    det_conf: float = 0.1  # the value the dev-set figures were measured with
    text_proposals: str = "fallback"
    region: str = "generic"
    calibration: Path | None = None
    second_look_above: float = DEFAULT_CONFIRMATION_THRESHOLD

    @classmethod
    def from_settings(cls, s: AnprSettings) -> RecognizerSpec:
        return cls(s.detector, s.detector_path, s.ocr, s.formats, s.det_conf, s.text_proposals, s.region,
                   s.calibration, s.second_look_above)

    def for_camera(self, camera: CameraSettings) -> RecognizerSpec:
        """This spec with the camera's own region, when it has one."""
        return replace(self, region=camera.region) if camera.region else self

    def __call__(self) -> Recognizer:
        from anpr.recognizer import make_recognizer

        # One worker process per camera: one thread each keeps cameras from starving one another.
        return make_recognizer(ocr=self.ocr, detector=self.detector, detector_path=self.detector_path,
                               formats=self.formats, threads=1, det_conf=self.det_conf,
                               text_proposals=self.text_proposals, region=self.region,
                               calibration=self.calibration, second_look_above=self.second_look_above)
