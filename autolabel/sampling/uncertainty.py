"""Uncertainty scores over a student's detections: pure functions, no model (modAL style).

Per box, each score is in [0, 1], higher = less sure:

* ``least_confidence`` = 1 - confidence.
* ``margin`` = 1 - (q1 - q2), the gap between the two most likely outcomes of the box's
  distribution ``q``.
* ``entropy`` = H(q) / log(len(q)), the normalized Shannon entropy of ``q``.

``q`` has one entry per class plus one for background: ``[c * p_1, ..., c * p_K, 1 - c]`` with
``c`` the box's confidence and ``p`` its per-class scores normalized to sum to 1, when the
detections carry them in ``det.data["class_probs"]`` (N x K, e.g. YOLO's per-class sigmoid
scores) and K >= 2; otherwise the binary ``[c, 1 - c]`` (object of the predicted class or not),
which is also what the general form reduces to for one class. So both scores grow with doubt
about *whether* there is an object and with doubt about *which* class it is.

Per image, box scores are aggregated with ``max`` (the single most doubtful box), ``mean`` (how
doubtful the image is on average) or ``sum`` (many doubtful boxes rank high). An image with no
predicted box scores ``EMPTY_SCORE`` = 0.0 under every aggregation: there is nothing the student
is unsure about. Score the pool at a low confidence threshold (the scorer uses 0.05) so that
doubtful boxes are present at all.

``localization_instability`` compares the predictions on an image with those on its horizontal
flip (mapped back): 1 - mean IoU over the matched pairs, each unmatched box counting as IoU 0;
0 = the two predictions agree exactly, 1 = nothing overlaps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv

__all__ = [
    "AGGREGATIONS",
    "BOX_SCORES",
    "CLASS_PROBS_KEY",
    "EMPTY_SCORE",
    "METHODS",
    "aggregate",
    "box_uncertainty",
    "class_distribution",
    "entropy",
    "hflip",
    "image_scores",
    "image_uncertainty",
    "least_confidence",
    "localization_instability",
    "margin",
]

METHODS = ("least_confidence", "margin", "entropy")
AGGREGATIONS = ("max", "mean", "sum")
EMPTY_SCORE = 0.0
CLASS_PROBS_KEY = "class_probs"
_EPS = 1e-12


def class_distribution(det: sv.Detections) -> np.ndarray:
    """Rows summing to 1: ``[c * p_1, ..., c * p_K, 1 - c]``, or ``[c, 1 - c]`` without class scores."""
    confidence = _confidence(det)
    probs = det.data.get(CLASS_PROBS_KEY) if det.data else None
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64).reshape(len(det), -1)
        if probs.shape[1] >= 2:
            probs = np.clip(probs, 0.0, None)
            total = probs.sum(axis=1, keepdims=True)
            uniform = np.full_like(probs, 1.0 / probs.shape[1])
            classes = np.where(total > _EPS, probs / np.maximum(total, _EPS), uniform)
            return np.concatenate([classes * confidence[:, None], 1.0 - confidence[:, None]], axis=1)
    return np.stack([confidence, 1.0 - confidence], axis=1)


def least_confidence(det: sv.Detections) -> np.ndarray:
    return 1.0 - _confidence(det)


def margin(det: sv.Detections) -> np.ndarray:
    if len(det) == 0:
        return np.zeros(0)
    q = np.sort(class_distribution(det), axis=1)
    return 1.0 - (q[:, -1] - q[:, -2])


def entropy(det: sv.Detections) -> np.ndarray:
    if len(det) == 0:
        return np.zeros(0)
    q = class_distribution(det)
    h = -(q * np.log(np.clip(q, _EPS, 1.0))).sum(axis=1)
    return np.clip(h / np.log(q.shape[1]), 0.0, 1.0)


BOX_SCORES = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}


def box_uncertainty(det: sv.Detections, method: str = "least_confidence") -> np.ndarray:
    """One score per box in [0, 1], higher = less sure."""
    try:
        return BOX_SCORES[method](det)
    except KeyError:
        raise ValueError(f"unknown uncertainty method {method!r}; choose from {', '.join(METHODS)}") from None


def aggregate(values: np.ndarray, how: str = "max", empty_score: float = EMPTY_SCORE) -> float:
    """Per-image score from per-box scores; an image without boxes gets ``empty_score``."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float(empty_score)
    return float(getattr(values, how)())


def image_uncertainty(det: sv.Detections, method: str = "least_confidence", how: str = "max") -> float:
    return aggregate(box_uncertainty(det, method), how)


def hflip(det: sv.Detections, width: int) -> sv.Detections:
    """Boxes mirrored left-right in an image ``width`` pixels wide (its own inverse)."""
    flipped = det[np.arange(len(det))]  # a copy with the same fields
    if len(det):
        xyxy = det.xyxy.astype(np.float32, copy=True)
        xyxy[:, 0], xyxy[:, 2] = width - det.xyxy[:, 2], width - det.xyxy[:, 0]
        flipped.xyxy = xyxy
    return flipped


def localization_instability(
    det: sv.Detections, flipped_det: sv.Detections, width: int, class_aware: bool = True
) -> float:
    """Disagreement between the predictions on an image and on its horizontal flip, in [0, 1].

    ``flipped_det`` are predictions made on the flipped image, in flipped coordinates; they are
    mapped back, then matched one-to-one to ``det`` maximizing total IoU (Hungarian). The score is
    ``1 - sum(matched IoU) / (matched + unmatched boxes of either side)``. With ``class_aware``
    boxes of different classes never match. Both empty: 0.0 (they agree).
    """
    from scipy.optimize import linear_sum_assignment
    from supervision import box_iou_batch

    back = hflip(flipped_det, width)
    if len(det) == 0 and len(back) == 0:
        return 0.0
    if len(det) == 0 or len(back) == 0:
        return 1.0
    iou = box_iou_batch(det.xyxy, back.xyxy).astype(np.float64)
    if class_aware and det.class_id is not None and back.class_id is not None:
        iou = iou * (det.class_id[:, None] == back.class_id[None, :])
    rows, cols = linear_sum_assignment(iou, maximize=True)
    matched = iou[rows, cols]
    matched = matched[matched > 0]
    boxes = len(det) + len(back) - len(matched)
    return float(1.0 - matched.sum() / boxes)


def image_scores(
    det: sv.Detections, flipped_det: sv.Detections | None = None, width: int | None = None
) -> dict[str, float]:
    """Every image-level score under a stable key: ``{method}_{how}``, ``instability``, ``boxes``.

    ``instability`` is present only when the flipped predictions (and the width) are given.
    """
    out: dict[str, float] = {}
    for method in METHODS:
        per_box = box_uncertainty(det, method)
        for how in AGGREGATIONS:
            out[f"{method}_{how}"] = aggregate(per_box, how)
    if flipped_det is not None:
        if width is None:
            raise ValueError("localization instability needs the image width")
        out["instability"] = localization_instability(det, flipped_det, width)
    out["boxes"] = float(len(det))
    return out


def _confidence(det: sv.Detections) -> np.ndarray:
    if det.confidence is None:
        if len(det):
            raise ValueError("uncertainty scores need detections with a confidence")
        return np.zeros(0)
    return np.clip(np.asarray(det.confidence, dtype=np.float64).reshape(-1), 0.0, 1.0)
