"""What a student is: a trainable detector that the loop fits, predicts with, scores and exports.

``Student`` is the seam between autolabel and a detection library (ultralytics YOLO today, see
``autolabel.students.yolo``). Images go in as RGB uint8 HxWx3 arrays; boxes come out in those
images' pixels with class ids in the order of the training classes (``store.class_names()``, as
written to data.yaml). The values here are plain numpy and ``sv.Detections``: nothing of the
backend's own result types leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import supervision as sv
    import torch

    from autolabel.exported.options import ExportOptions


__all__ = [
    "FitResult",
    "FitSettings",
    "ModelChoice",
    "RawBoxes",
    "RawDiff",
    "ScoredImage",
    "Student",
]


@dataclass(frozen=True)
class ModelChoice:
    """What a training run starts from, decided before the run is recorded."""

    source: str  # what the backend loads: a weights path or a model config name (e.g. a yaml)
    pretrained: bool
    warning: str | None = None


@dataclass(frozen=True)
class RawBoxes:
    """One image's raw model output in original pixels (what ``Student.predict`` returns)."""

    xyxy: np.ndarray  # (N, 4) float
    confidence: np.ndarray  # (N,)
    class_id: np.ndarray  # (N,) int


@dataclass(frozen=True, kw_only=True)
class RawDiff:
    """Max |PyTorch - exported| of the raw outputs of the exported graph on one input."""

    overall: float  # over every output value
    scores: float  # over the class-score values only (boxes may be in other units)
    by_output: dict[str, float] = field(default_factory=dict)  # per named output, where outputs are named
    reordered: bool = False  # set-valued outputs (DETR queries) were paired out of order before the diff


@dataclass(frozen=True)
class FitResult:
    weights: Path  # the checkpoint the run keeps (best on validation, else the last epoch)
    metrics: dict  # the backend's own validation numbers (precision, recall, map50, map50_95)
    epoch_seconds: list[float]  # wall time of each epoch, in order


@dataclass(frozen=True)
class ScoredImage:
    """One image as the pool scorer needs it, from a single forward pass."""

    detections: sv.Detections  # with per-box class scores under ``uncertainty.CLASS_PROBS_KEY`` when known
    embedding: np.ndarray | None  # pooled, L2-normalized backbone features; None when not asked or unknown


class FitSettings(Protocol):
    """The training hyperparameters ``fit`` reads (``autolabel.train.TrainSettings`` has them)."""

    epochs: int
    imgsz: int
    batch: int
    seed: int
    deterministic: bool
    patience: int
    close_mosaic: int
    workers: int
    plots: bool
    val_each_epoch: bool
    warmup_epochs: float
    ema: bool  # an EMA of the weights is validated and saved (ultralytics always keeps one)


class Student(Protocol):
    """A student backend: the class methods load one, the instance methods are the loop's steps."""

    backend: str  # the name in ``autolabel.students.BACKENDS``
    reference_name: str  # where an export folder keeps the PyTorch weights its exports are checked against
    preprocessing: str  # how an image becomes the exported graph's input, in words (for the model card)

    @classmethod
    def choose(cls, model: str, *, resume_from: str | None = None, download: bool = True) -> ModelChoice:
        """What a training run starts from (``resume_from``: a previous student's weights), decided
        before the run is recorded; a missing pretrained model is a ``warning``, not an error."""
        ...

    @classmethod
    def start(cls, choice: ModelChoice) -> Student:
        """The untrained (or pretrained) student a run fits."""
        ...

    @classmethod
    def load(cls, weights: str | Path) -> Student:
        """Trained weights, an exported file or folder, or a model config, for inference."""
        ...

    @classmethod
    def copy_reference(cls, weights: Path, out_dir: Path) -> Path:
        """Copy ``weights`` into the export folder ``out_dir`` as ``reference_name``; returns that path."""
        ...

    @classmethod
    def check_export(cls, options: ExportOptions) -> None:
        """Raise a one-line ``AutolabelError``, before any work, for a variant this backend cannot export."""
        ...

    @classmethod
    def license_note(cls, *, model: str | None, pretrained: bool) -> str:
        """The license of the student's code and of the weights it started from (``model``)."""
        ...

    @property
    def class_names(self) -> list[str]: ...

    @property
    def can_embed(self) -> bool:
        """Whether ``score``/``embed`` can return backbone features (not for exported formats)."""
        ...

    def fit(self, data_yaml: Path, settings: FitSettings, run_dir: Path, device: str) -> FitResult:
        """Train on the YOLO dataset ``data_yaml``; checkpoints and logs go to ``run_dir``."""
        ...

    def predict(
        self,
        images: Sequence[np.ndarray],
        *,
        conf: float,
        imgsz: int,
        iou: float = 0.7,
        max_det: int = 300,
        device: str = "cpu",
        square: bool = False,
    ) -> list[RawBoxes]:
        """One ``RawBoxes`` per image after NMS; ``square``: letterbox to imgsz x imgsz as a static
        export sees its input, not to the smallest padded rectangle."""
        ...

    def score(
        self,
        images: Sequence[np.ndarray],
        *,
        conf: float,
        iou: float,
        imgsz: int,
        max_det: int,
        device: str,
        embed: bool,
    ) -> list[ScoredImage]:
        """Detections with their per-class scores and (``embed``) backbone features, in one pass."""
        ...

    def embed(self, images: Sequence[np.ndarray], *, imgsz: int, device: str) -> np.ndarray | None:
        """Pooled, L2-normalized backbone features, one row per image; None when ``not can_embed``."""
        ...

    def export(self, options: ExportOptions, out: Path, *, calibration: Path | None = None) -> Path:
        """Export the weights this student was loaded from to ``out`` (a path without suffix: the
        backend adds its own); returns the exported file or folder. ``calibration``: a YOLO
        data.yaml whose train split calibrates an int8 export."""
        ...

    def torch_module(self, device: str = "cpu") -> torch.nn.Module:
        """The eval-mode network as the exporter traces it (raw head outputs, no NMS)."""
        ...

    def raw_input(self, rgb: np.ndarray, imgsz: int) -> np.ndarray:
        """One RGB image as the 1x3ximgszximgsz float32 tensor the exported graph takes."""
        ...

    def raw_diff(self, reference: Sequence[np.ndarray], exported: Sequence[np.ndarray]) -> RawDiff:
        """Compare the raw outputs of ``torch_module`` with the exported graph's on the same input."""
        ...
