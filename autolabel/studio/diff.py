"""What the human changed in a pre-label, what that cost, and how good the proposer was (pure maths).

Each pre-label box is matched one-to-one to a human box (Hungarian assignment on IoU, pairs with
IoU >= ``match_iou`` only). A matched pair is *kept* (same class, IoU >= ``moved_iou``), *moved*
(same class, IoU < ``moved_iou``) or *relabeled* (other class); unmatched pre-label boxes were
*deleted*, unmatched human boxes *added*. Proposer precision/recall count a pre-label box as a
true positive when its match has the same class and IoU >= 0.5 (the usual detection criterion).

Human time (seconds) is a documented cost model, every number configurable (``studio.costs``,
``config.AnnotationCostConfig``, named ``CostModel`` here):

* ``draw`` 7.0 s per new box: extreme clicking, Papadopoulos, Uijlings, Keller, Ferrari,
  "Extreme clicking for efficient object annotation", ICCV 2017 (7.0 s per box on PASCAL VOC).
  Conventional box drawing takes ~35 s per box including quality control (Su, Deng, Fei-Fei,
  "Crowdsourcing annotations for visual object detection", AAAI HCOMP workshop 2012; 25.5 s to
  draw plus verification); set ``draw: 35`` to model that.
* ``verify`` 1.6 s per pre-label box looked at and accepted: the median time to verify a box
  (Papadopoulos, Uijlings, Keller, Ferrari, "We don't need no bounding-boxes: training object
  class detectors using only human verification", CVPR 2016: 1.6 s per yes/no box verification).
* ``adjust`` 5.0 s per moved box: verify (1.6 s) plus dragging one or two edges; no published
  figure we know of, assumed at about half of an extreme-click box.
* ``relabel`` 3.0 s per relabeled box: verify plus picking another class from the label list
  (assumption: one extra click/hotkey ~1.4 s).
* ``delete`` 2.0 s per deleted box: verify plus select-and-delete (assumption).
* ``per_image`` 2.0 s: load, scan the image and submit, also for an empty image (assumption,
  about one verification).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autolabel.config import AnnotationCostConfig

if TYPE_CHECKING:
    import supervision as sv

MOVED_IOU = 0.9
MATCH_IOU = 0.3
TP_IOU = 0.5


# The cost model is the ``studio.costs`` settings section itself (one type, one list of fields).
CostModel = AnnotationCostConfig


@dataclass(frozen=True)
class Correction:
    shown: int
    human: int
    kept: int
    moved: int
    relabeled: int
    deleted: int
    added: int
    true_positives: int


def diff(
    shown: sv.Detections, human: sv.Detections, *, moved_iou: float = MOVED_IOU, match_iou: float = MATCH_IOU
) -> Correction:
    import supervision as sv
    from scipy.optimize import linear_sum_assignment

    n_shown, n_human = len(shown), len(human)
    kept = moved = relabeled = tp = 0
    matched = 0
    if n_shown and n_human:
        iou = sv.box_iou_batch(shown.xyxy, human.xyxy).astype(np.float64)
        same = shown.class_id[:, None] == human.class_id[None, :]
        # Among pairs that overlap enough, a same-class pair beats any relabeling, then IoU decides.
        score = np.where(iou >= match_iou, iou + same, 0.0)
        rows, cols = linear_sum_assignment(-score)
        for r, c in zip(rows, cols):
            if iou[r, c] < match_iou:
                continue
            matched += 1
            if not same[r, c]:
                relabeled += 1
            elif iou[r, c] >= moved_iou:
                kept += 1
            else:
                moved += 1
            if same[r, c] and iou[r, c] >= TP_IOU:
                tp += 1
    return Correction(
        shown=n_shown,
        human=n_human,
        kept=kept,
        moved=moved,
        relabeled=relabeled,
        deleted=n_shown - matched,
        added=n_human - matched,
        true_positives=tp,
    )
