"""The proposers' export-time parity rules (runtime_parity), on arrays whose answer is known."""

from __future__ import annotations

import numpy as np

from autolabel import detections as dets
from autolabel.proposers.runtime_parity import QUERY_MATCH, Tolerance, detections_parity, raw_parity

TOL = {"logits": Tolerance(1e-3, 1e-4), "boxes": Tolerance(1e-3)}


def outputs(queries: int = 200, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, (2, queries, 5)).astype(np.float32)
    boxes = rng.uniform(0, 1, (2, queries, 4)).astype(np.float32)
    return logits, boxes


def test_identical_outputs_pass_and_report_zero_diffs():
    logits, boxes = outputs()
    reason, figures = raw_parity((logits, boxes), (logits.copy(), boxes.copy()), TOL)
    assert reason is None
    assert figures["max_logits_diff"] == 0.0 and figures["queries_within"] == figures["queries"] == 400


def test_reordered_queries_fail_in_order_and_pass_once_paired():
    logits, boxes = outputs()
    order = np.random.default_rng(1).permutation(200)
    shuffled = (logits[:, order], boxes[:, order])
    reason, _ = raw_parity((logits, boxes), shuffled, TOL)
    assert reason is not None and reason.startswith("parity failed")
    reason, figures = raw_parity((logits, boxes), shuffled, TOL, pair_queries=True)
    assert reason is None and figures["queries_reordered"] is True and figures["max_boxes_diff"] == 0.0


def test_the_logit_limit_scales_with_the_logits_magnitude():
    logits, boxes = outputs(scale=1000.0)  # random weights: logits in the thousands
    noisy = logits + np.float32(0.05)  # 5e-5 of the largest logit: fp32 rounding territory
    assert raw_parity((logits, boxes), (noisy, boxes), TOL)[0] is None
    small, _ = outputs(scale=1.0)
    assert raw_parity((small, boxes), (small + np.float32(0.05), boxes), TOL)[0] is not None


def test_a_few_queries_off_are_tolerated_more_are_not():
    logits, boxes = outputs(queries=1000)
    allowed = int((1 - QUERY_MATCH) * 2000)  # two images of 1000 queries
    for bad, passes in ((allowed, True), (allowed + 1, False)):
        moved = boxes.copy().reshape(-1, 4)
        moved[:bad] += 0.5
        reason, figures = raw_parity((logits, boxes), (logits, moved.reshape(boxes.shape)), TOL)
        assert (reason is None) is passes, (bad, reason)
        assert figures["queries"] - figures["queries_within"] == bad


def test_a_shape_mismatch_fails_in_one_line():
    logits, boxes = outputs()
    reason, _ = raw_parity((logits, boxes), (logits[:, :10], boxes), TOL)
    assert reason.startswith("parity failed: logits shaped") and "\n" not in reason


def test_detections_match_by_class_and_iou_with_scores_close():
    want = dets.make(
        np.array([[0, 0, 10, 10], [20, 20, 40, 40]], float), np.array([0, 1]), np.array([0.9, 0.5])
    )
    same = dets.make(want.xyxy[::-1] + 0.1, np.array([1, 0]), np.array([0.5004, 0.9]))
    reason, figures = detections_parity([want], [same], score_atol=1e-3)
    assert reason is None and figures["detections_matched"] == 2 and figures["max_score_diff"] < 1e-3
    other_class = dets.make(want.xyxy, np.array([1, 1]), want.confidence)
    reason, figures = detections_parity([want], [other_class], score_atol=1e-3)
    assert reason.startswith("parity failed: 1 of 2 detections match") and figures["detections_matched"] == 1
    off_score = dets.make(want.xyxy, want.class_id, want.confidence + 0.01)
    assert "scores differ" in detections_parity([want], [off_score], score_atol=1e-3)[0]
    assert detections_parity([dets.empty()], [dets.empty()], score_atol=1e-3)[0] is None


def test_overlapping_neighbours_with_different_scores_compare_rank_for_rank():
    # two near-identical boxes of one class, scores 1.0 and 0.0: any IoU pairing may cross them
    boxes = np.array([[0, 0, 100, 100], [0, 0, 100, 101]], float)
    want = dets.make(boxes, np.array([0, 0]), np.array([1.0, 0.0]))
    crossed = dets.make(boxes, np.array([0, 0]), np.array([0.0, 1.0]))
    assert detections_parity([want], [crossed], score_atol=1e-3)[0] is None
