"""The trained student as a proposer: same protocol as the open-vocabulary teachers.

Used by ``autolabel eval`` (at a low confidence, for mAP), by the sampler (uncertainty of the
current student) and by the export parity check (ONNX vs PyTorch on the same images).
``postprocess`` is pure: numpy boxes in, ``sv.Detections`` out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.proposers.base import FinalizeOptions, StagedProposer, finalize
from autolabel.students.base import RawBoxes

if TYPE_CHECKING:
    import supervision as sv


class StudentProposer(StagedProposer):
    """A trained student loaded once; ``predict(RGB arrays) -> [sv.Detections]`` in those images' pixels.

    Class ids are the training classes (``store.class_names()`` order, as written to data.yaml).
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        conf: float = 0.25,
        iou: float = 0.7,  # NMS IoU, ultralytics' default
        imgsz: int = 640,
        max_det: int = 300,
        device: str = "auto",
        batch_size: int = 8,
    ):
        from autolabel import students
        from autolabel.runtime import resolve_device

        weights = Path(weights)
        if not weights.is_file():
            raise AutolabelError(f"student weights not found: {weights}")
        self.student = students.load(weights)
        self.weights = weights
        self.conf, self.iou, self.imgsz, self.max_det = conf, iou, imgsz, max_det
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.class_names = self.student.class_names
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
        self.model_version = f"student:{weights.name}:{digest}"
        self.finalize_options = FinalizeOptions(
            thresholds=(conf,) * max(len(self.class_names), 1), max_det=max_det
        )

    def preprocess(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(images)

    def forward(self, inputs: list[np.ndarray]) -> list[RawBoxes]:
        outputs: list[RawBoxes] = []
        for start in range(0, len(inputs), self.batch_size):
            outputs += self.student.predict(
                inputs[start : start + self.batch_size],
                conf=self.conf,
                iou=self.iou,
                imgsz=self.imgsz,
                max_det=self.max_det,
                device=self.device,
            )
        return outputs

    def postprocess_one(self, output: RawBoxes, *, width: int, height: int) -> sv.Detections:
        return raw_to_detections(output, self.finalize_options, height=height, width=width)


def raw_to_detections(raw: RawBoxes, options: FinalizeOptions, *, height: int, width: int):
    """Pure: threshold, clip to the image, keep the ``options.max_det`` best."""
    from autolabel import detections as dets

    det = dets.make(raw.xyxy, raw.class_id, raw.confidence)
    return finalize(det, options, width=width, height=height)
