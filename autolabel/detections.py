"""The one detection type is ``supervision.Detections`` (xyxy pixels, confidence, class_id).

This module only holds the few helpers the store and the engines need around it:
JSON (de)serialization, an empty value and per-class thresholding, and ``LabeledImage``, the one
record of an image with its boxes that dataset readers and writers pass around.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv


__all__ = [
    "LabeledImage",
    "apply_class_thresholds",
    "clip_to_image",
    "empty",
    "from_dict",
    "from_json",
    "make",
    "match_boxes",
    "match_pairs",
    "match_rate",
    "query_order",
    "to_dict",
    "to_json",
]


@dataclass(frozen=True)
class LabeledImage:
    """An image of the workspace and its boxes (in its pixels, class ids index the store's classes)."""

    id: int
    path: str  # POSIX, relative to the image root
    width: int  # after EXIF orientation, the frame the boxes are in
    height: int
    detections: sv.Detections
    sha256: str = ""
    source: str = "labels"  # 'labels' (human-verified) | 'predictions'


def empty() -> sv.Detections:
    import supervision as sv

    return sv.Detections.empty()


def make(xyxy, class_id, confidence=None) -> sv.Detections:
    import supervision as sv

    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    class_id = np.asarray(class_id, dtype=int).reshape(-1)
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float32).reshape(-1)
    return sv.Detections(xyxy=xyxy, class_id=class_id, confidence=confidence)


def to_dict(det: sv.Detections) -> dict:
    """A compact JSON-ready dict; boxes rounded to 1/100 pixel, scores to 1e-5."""
    out = {
        "xyxy": np.round(det.xyxy.astype(float), 2).tolist(),
        "class_id": [int(c) for c in (det.class_id if det.class_id is not None else [])],
    }
    if det.confidence is not None:
        out["confidence"] = np.round(det.confidence.astype(float), 5).tolist()
    return out


def from_dict(data: dict) -> sv.Detections:
    if not data or not data.get("xyxy"):
        return empty()
    return make(data["xyxy"], data["class_id"], data.get("confidence"))


def to_json(det: sv.Detections) -> str:
    return json.dumps(to_dict(det), separators=(",", ":"))


def from_json(text: str | None) -> sv.Detections:
    return from_dict(json.loads(text)) if text else empty()


def apply_class_thresholds(det: sv.Detections, thresholds: list[float]) -> sv.Detections:
    """Keep a box when its confidence reaches its own class's threshold."""
    if len(det) == 0:
        return det
    limits = np.asarray(thresholds, dtype=np.float32)[det.class_id]
    return det[det.confidence >= limits]


def clip_to_image(det: sv.Detections, width: int, height: int) -> sv.Detections:
    if len(det) == 0:
        return det
    xyxy = det.xyxy.copy()
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    det.xyxy = xyxy
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return det[keep]


def match_pairs(reference: sv.Detections, other: sv.Detections, iou: float = 0.9) -> list[tuple[int, int]]:
    """The (reference, other) index pairs that match one-to-one with the same class at IoU >= ``iou``
    (greedy, best overlap first)."""
    if len(reference) == 0 or len(other) == 0:
        return []
    import supervision as sv

    overlaps = sv.box_iou_batch(reference.xyxy, other.xyxy)
    overlaps[reference.class_id[:, None] != other.class_id[None, :]] = 0.0
    pairs = []
    while True:
        i, j = np.unravel_index(np.argmax(overlaps), overlaps.shape)
        if overlaps[i, j] < iou:
            return pairs
        pairs.append((int(i), int(j)))
        overlaps[i, :] = 0.0
        overlaps[:, j] = 0.0


def match_boxes(reference: sv.Detections, other: sv.Detections, iou: float = 0.9) -> int:
    """How many boxes pair up one-to-one with the same class at IoU >= ``iou`` (``match_pairs``)."""
    return len(match_pairs(reference, other, iou))


def match_rate(matched: int, n_reference: int, n_other: int) -> float:
    """Matched pairs over the larger box count; two empty outputs agree perfectly."""
    larger = max(n_reference, n_other)
    return 1.0 if larger == 0 else matched / larger


def query_order(expected: np.ndarray, got: np.ndarray, *, reduce: str = "sum") -> np.ndarray:
    """The order of ``got``'s rows that pairs them one-to-one with ``expected``'s rows (a DETR's
    queries, (Q, features): a top-k may emit them in another order from another runtime).

    A linear assignment on the rows' distance (``reduce``: "sum" for L1, "max" for the largest
    difference), kept only when it beats the given order by the same measure; else the identity.
    """
    from scipy.optimize import linear_sum_assignment

    combine = {"sum": np.sum, "max": np.max}[reduce]
    distance = np.abs(expected[:, None, :].astype(np.float64) - got[None, :, :].astype(np.float64))
    cost = np.nan_to_num(combine(distance, axis=2), nan=1e9, posinf=1e9)
    _, paired = linear_sum_assignment(cost)
    in_order = np.arange(len(cost))
    better = combine(cost[in_order, paired], initial=0.0) < combine(cost[in_order, in_order], initial=0.0)
    return paired if better else in_order
