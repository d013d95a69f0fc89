"""Uncertainty scores on hand-built detections: which image ranks first, and why."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel.sampling import uncertainty as U


def boxes(confidences, class_ids=None, class_probs=None, xyxy=None):
    n = len(confidences)
    if xyxy is None:
        xyxy = [[10.0 * i, 0.0, 10.0 * i + 8, 8.0] for i in range(n)]
    det = dets.make(xyxy, class_ids if class_ids is not None else [0] * n, confidences)
    if class_probs is not None:
        det.data[U.CLASS_PROBS_KEY] = np.asarray(class_probs, dtype=np.float32)
    return det


def binary_entropy(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)


@pytest.mark.parametrize(
    "method, confidences, class_probs, expected",
    [
        ("least_confidence", [0.9, 0.5, 0.2], None, [0.1, 0.5, 0.8]),
        # without class scores: binary [c, 1 - c]; margin = 1 - |2c - 1|
        ("margin", [0.9, 0.5, 0.2], None, [0.2, 1.0, 0.4]),
        ("entropy", [0.9, 0.5], None, [binary_entropy(0.9), 1.0]),
        # with class scores: q = [c * normalized class scores..., background 1 - c]
        # [0.36, 0.12, 0.12, 0.40]: background vs class 0 is close; [0.2, 0.2, 0, 0.6]
        ("margin", [0.6, 0.4], [[0.6, 0.2, 0.2], [0.4, 0.4, 0.0]], [1 - (0.40 - 0.36), 1 - (0.6 - 0.2)]),
        # a sure object of an unsure class: [0.45, 0.45, 0.1] -> margin 1
        ("margin", [0.9], [[0.9, 0.9]], [1.0]),
        # four equally likely classes and background at 0.5: [1/8] * 4 + [1/2]
        ("entropy", [0.5], [[0.5, 0.5, 0.5, 0.5]], [(0.5 * math.log(8) + 0.5 * math.log(2)) / math.log(5)]),
        # one clear class: only the object/background doubt remains
        ("entropy", [0.9], [[0.9, 0.0, 0.0, 0.0]], [binary_entropy(0.9) * math.log(2) / math.log(5)]),
        # sigmoid scores need not sum to 1: [0.3, 0.1] is [0.75, 0.25] -> [0.225, 0.075, 0.7]
        ("margin", [0.3], [[0.3, 0.1]], [1 - (0.7 - 0.225)]),
        # a single class score is no distribution: falls back to [c, 1 - c]
        ("entropy", [0.9], [[0.9]], [binary_entropy(0.9)]),
    ],
)
def test_box_scores(method, confidences, class_probs, expected):
    det = boxes(confidences, class_probs=class_probs)
    assert U.box_uncertainty(det, method) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("method", U.METHODS)
def test_box_scores_are_in_unit_interval_and_peak_at_half(method):
    grid = np.linspace(0.0, 1.0, 21)
    scores = U.box_uncertainty(boxes(grid.tolist()), method)
    assert scores.min() >= 0.0 and scores.max() <= 1.0 + 1e-6
    if method != "least_confidence":
        assert grid[int(np.argmax(scores))] == pytest.approx(0.5)


# Three images: one very unsure box / many mildly unsure boxes / two sure boxes.
POOL = {
    "one_unsure": [0.5],
    "many_mild": [0.7, 0.7, 0.7, 0.7, 0.7],
    "sure": [0.98, 0.97],
}


@pytest.mark.parametrize(
    "method, how, first, why",
    [
        ("least_confidence", "max", "one_unsure", "its single box is a coin flip"),
        ("least_confidence", "mean", "one_unsure", "average doubt 0.5 beats 0.3"),
        ("least_confidence", "sum", "many_mild", "five boxes at 0.3 doubt add up to 1.5"),
        ("entropy", "max", "one_unsure", "entropy peaks at 0.5"),
        ("entropy", "sum", "many_mild", "five boxes of H(0.7)=0.88 bits"),
        ("margin", "mean", "one_unsure", "margin 0 between object and background"),
    ],
)
def test_aggregation_decides_which_image_ranks_first(method, how, first, why):
    ranked = max(POOL, key=lambda name: U.image_uncertainty(boxes(POOL[name]), method, how))
    assert ranked == first, why


@pytest.mark.parametrize(
    "method, confused_first", [("least_confidence", False), ("margin", True), ("entropy", True)]
)
def test_class_confusion_counts_only_where_class_scores_do(method, confused_first):
    # Both images hold one box at confidence 0.9; in one the student cannot tell bolt from screw.
    clear = boxes([0.9], class_probs=[[0.9, 0.02, 0.01]])
    confused = boxes([0.9], class_probs=[[0.9, 0.85, 0.01]])
    clear_score = U.image_uncertainty(clear, method, "max")
    confused_score = U.image_uncertainty(confused, method, "max")
    if confused_first:
        assert confused_score > clear_score + 0.2
    else:
        assert confused_score == pytest.approx(clear_score)


@pytest.mark.parametrize("how", U.AGGREGATIONS)
@pytest.mark.parametrize("method", U.METHODS)
def test_empty_prediction_scores_the_documented_constant(method, how):
    assert U.image_uncertainty(dets.empty(), method, how) == U.EMPTY_SCORE == 0.0


def test_unknown_method_and_aggregation_are_rejected():
    with pytest.raises(ValueError, match="unknown uncertainty method"):
        U.box_uncertainty(boxes([0.5]), "variance")
    with pytest.raises(ValueError, match="unknown aggregation"):
        U.aggregate(np.array([0.5]), "median")


def test_hflip_mirrors_and_is_its_own_inverse():
    det = boxes([0.9, 0.8], xyxy=[[0, 0, 10, 10], [70, 5, 100, 20]])
    flipped = U.hflip(det, 100)
    assert flipped.xyxy.tolist() == [[90, 0, 100, 10], [0, 5, 30, 20]]
    assert U.hflip(flipped, 100).xyxy.tolist() == det.xyxy.tolist()
    assert det.xyxy.tolist() == [[0, 0, 10, 10], [70, 5, 100, 20]]  # input untouched
    assert flipped.confidence.tolist() == pytest.approx([0.9, 0.8])


W = 100
A = [10, 10, 30, 30]
A_SHIFTED = [20, 10, 40, 30]  # IoU with A = 200 / 600 = 1/3
B = [60, 60, 90, 90]


def mirrored(xyxy_list, class_ids=None):
    """Predictions as a model would make them on the flipped image (flipped coordinates)."""
    det = boxes([0.9] * len(xyxy_list), class_ids=class_ids, xyxy=xyxy_list or None)
    return U.hflip(det, W) if xyxy_list else dets.empty()


@pytest.mark.parametrize(
    "original, original_classes, on_flip, flip_classes, expected",
    [
        ([A, B], [0, 1], [A, B], [0, 1], 0.0),  # same boxes back: stable
        ([A], [0], [A_SHIFTED], [0], 1 - 1 / 3),  # one pair at IoU 1/3
        ([A, B], [0, 1], [A], [0], 1 - 1 / 2),  # B unmatched: (1 + 0) / 2 boxes
        ([A], [0], [A, B], [0, 1], 1 - 1 / 2),  # an extra box on the flip counts too
        ([A], [0], [A], [1], 1.0),  # same place, different class: no match
        ([A], [0], [], None, 1.0),  # the flip finds nothing
        ([], None, [], None, 0.0),  # both empty: they agree
    ],
)
def test_localization_instability(original, original_classes, on_flip, flip_classes, expected):
    det = (
        boxes([0.9] * len(original), class_ids=original_classes, xyxy=original) if original else dets.empty()
    )
    score = U.localization_instability(det, mirrored(on_flip, flip_classes), W)
    assert score == pytest.approx(expected, abs=1e-5)


def test_instability_matching_is_one_to_one():
    # Two identical boxes on the flip cannot both match the one original box.
    score = U.localization_instability(boxes([0.9], xyxy=[A]), mirrored([A, A]), W)
    assert score == pytest.approx(1 - 1 / 2)


def test_image_scores_has_every_key():
    det = boxes([0.6, 0.9])
    scores = U.image_scores(det, U.hflip(det, W), W)
    expected = {f"{m}_{h}" for m in U.METHODS for h in U.AGGREGATIONS} | {"instability", "boxes"}
    assert set(scores) == expected
    assert scores["boxes"] == 2 and scores["instability"] == pytest.approx(0.0)
    assert "instability" not in U.image_scores(det)
    with pytest.raises(ValueError, match="width"):
        U.image_scores(det, det)
