"""What every proposer is: a class that loads its model once and labels batches of images.

A backend has three stages, as transformers' zero-shot pipeline does: ``preprocess`` (decoded RGB
arrays -> model inputs), ``forward`` (inputs -> raw outputs as numpy) and a *pure* ``postprocess``
(raw outputs -> one ``sv.Detections`` per image, class ids are ontology class indices).

``BatchMapper`` wraps a proposer into the row interface shared by the local engine and a Ray Data
engine (``map_batches`` with one actor per GPU): rows of ``{id, path}`` in, rows of
``{id, detections, error}`` out, decoding inside, a bad file becoming an error row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from autolabel import detections as dets
from autolabel.config import ProposerConfig
from autolabel.images import ImageDecodeError, decode

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.ontology import Ontology

__all__ = [
    "BatchMapper",
    "FinalizeOptions",
    "Proposer",
    "ProposerSettings",
    "StagedProposer",
    "finalize",
]

# A proposer runs with the workspace's ``proposer:`` section itself (one settings type); flags
# and callers override its fields with ``config.model_copy(update=...)``.
ProposerSettings = ProposerConfig


@dataclass(frozen=True, kw_only=True)
class FinalizeOptions:
    """What ``finalize`` applies after a backend's own decoding: built once per proposer."""

    thresholds: tuple[float, ...]  # box threshold per class id
    max_det: int
    nms_iou: float | None = None  # None: no NMS beyond what the backend does itself
    class_agnostic_nms: bool = False

    @classmethod
    def from_settings(cls, settings: ProposerSettings, ontology: Ontology) -> FinalizeOptions:
        """Each ontology class's own box threshold (``settings.box_threshold`` where it has none)."""
        return cls(
            thresholds=tuple(ontology.thresholds(settings.box_threshold)),
            max_det=settings.max_det,
            nms_iou=settings.nms_iou,
            class_agnostic_nms=settings.class_agnostic_nms,
        )


class Proposer(Protocol):
    """Loads its model in ``__init__(settings, ontology)``; then only predicts."""

    model_version: str  # human-readable id of model + weights, shown in Label Studio

    def predict(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """RGB uint8 HxWx3 arrays -> detections in those images' pixels, ontology class ids."""
        ...


class StagedProposer:
    """Base for backends: predict = postprocess(forward(preprocess(images))).

    ``postprocess`` maps ``postprocess_one`` over the batch; a backend implements that one pure
    step per image (raw output -> detections in that image's pixels).
    """

    model_version: str = "unknown"

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        raise NotImplementedError

    def forward(self, inputs: Any) -> Any:
        raise NotImplementedError

    def postprocess_one(self, output: Any, *, width: int, height: int) -> sv.Detections:
        raise NotImplementedError

    def postprocess(self, outputs: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[sv.Detections]:
        """One output per image, ``sizes`` as (height, width)."""
        return [
            self.postprocess_one(output, width=width, height=height)
            for output, (height, width) in zip(outputs, sizes)
        ]

    def predict(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        if not images:
            return []
        sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]  # (height, width)
        return self.postprocess(self.forward(self.preprocess(images)), sizes)


def finalize(det: sv.Detections, options: FinalizeOptions, *, width: int, height: int) -> sv.Detections:
    """The common tail of every postprocess: per-class thresholds, clip, NMS, top-k by score."""
    det = dets.apply_class_thresholds(det, list(options.thresholds))
    det = dets.clip_to_image(det, width, height)
    if options.nms_iou is not None and len(det) > 1:
        det = det.with_nms(threshold=options.nms_iou, class_agnostic=options.class_agnostic_nms)
    if len(det) > options.max_det:
        det = det[np.argsort(-det.confidence, kind="stable")[: options.max_det]]
    return det


class BatchMapper:
    """Rows of ``{id, path}`` -> rows of ``{id, detections, error}`` (detections as JSON-ready dict).

    The factory runs once, in the worker that owns the model (a Ray actor's ``__init__``).
    """

    def __init__(self, factory: Callable[[], Proposer]):
        self.proposer = factory()

    @property
    def model_version(self) -> str:
        return self.proposer.model_version

    def map_rows(self, rows: Sequence[dict]) -> list[dict]:
        decoded, good_rows, out = [], [], {}
        for row in rows:
            try:
                decoded.append(decode(row["path"]).pixels)
                good_rows.append(row)
            except ImageDecodeError as exc:
                out[row["id"]] = {"id": row["id"], "detections": None, "error": str(exc), "unreadable": True}
        return self.label_decoded(good_rows, decoded, out, rows)

    def label_decoded(
        self, good_rows: Sequence[dict], images: Sequence[np.ndarray], out: dict, rows: Sequence[dict]
    ) -> list[dict]:
        """Label already-decoded images (the local engine decodes in a background thread)."""
        try:
            results = self.proposer.predict(images)
            for row, det in zip(good_rows, results):
                out[row["id"]] = {"id": row["id"], "detections": dets.to_dict(det), "error": None}
        except Exception as exc:  # one failing batch is recorded per image, the run goes on  # noqa: BLE001
            if len(images) > 1:
                for row, image in zip(good_rows, images):
                    self.label_decoded([row], [image], out, [row])
            else:
                for row in good_rows:
                    out[row["id"]] = {"id": row["id"], "detections": None, "error": f"model failed: {exc}"}
        return [out[row["id"]] for row in rows if row["id"] in out]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        """Ray Data's column batches: {"id": [...], "path": [...]} -> {"id", "detections", "error"}."""
        rows = [{"id": i, "path": p} for i, p in zip(list(batch["id"]), list(batch["path"]))]
        mapped = self.map_rows(rows)
        return {key: [r[key] for r in mapped] for key in ("id", "detections", "error")}
