"""Metrics on hand-built cases, AP checked against pycocotools itself."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel.evaluate import coco_metrics, compute_metrics, match_image, threshold_metrics

NAMES = ["nut", "bolt"]
SIZE = (200, 200)  # width, height


def truth(*boxes):
    """(x1, y1, x2, y2, class)"""
    if not boxes:
        return dets.empty()
    return dets.make([b[:4] for b in boxes], [b[4] for b in boxes])


def pred(*boxes):
    """(x1, y1, x2, y2, class, score)"""
    if not boxes:
        return dets.empty()
    return dets.make([b[:4] for b in boxes], [b[4] for b in boxes], [b[5] for b in boxes])


A = (10, 10, 50, 50, 0)  # 40x40 -> medium
B = (100, 100, 160, 150, 1)  # 60x50 -> medium
C = (60, 10, 90, 40, 0)  # 30x30 -> small

# name: (truths per image, predictions per image)
CASES = {
    "perfect": ([truth(A, B), truth(C)], [pred((*A, 0.9), (*B, 0.8)), pred((*C, 0.7))]),
    "one_miss": ([truth(A, B), truth(C)], [pred((*A, 0.9), (*B, 0.8)), pred()]),
    "duplicate": ([truth(A)], [pred((*A, 0.9), (12, 11, 51, 50, 0, 0.8))]),
    "wrong_class": ([truth(A, B)], [pred((*A[:4], 1, 0.9), (*B, 0.8))]),
    "shifted_and_scored": (
        [truth(A, B, C), truth(B)],
        [
            pred((14, 12, 52, 55, 0, 0.6), (*B, 0.95), (150, 150, 190, 190, 1, 0.9)),
            pred((105, 98, 160, 150, 1, 0.4)),
        ],
    ),
    "empty_image_with_false_positive": ([truth(A), truth()], [pred((*A, 0.9)), pred((*B, 0.99))]),
    "sizes": (
        [truth((0, 0, 20, 20, 0), (0, 100, 60, 160, 0), (50, 0, 200, 120, 1))],
        [pred((0, 0, 20, 20, 0, 0.9), (0, 100, 60, 160, 0, 0.3), (60, 10, 200, 120, 1, 0.5))],
    ),
}


def pycocotools_stats(truths, preds, names=NAMES):
    """The reference: pycocotools on COCO dicts built here, independently of autolabel.formats."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for image_id, (t, p) in enumerate(zip(truths, preds), start=1):
        images.append({"id": image_id, "width": SIZE[0], "height": SIZE[1], "file_name": f"{image_id}.png"})
        for box, cls in zip(t.xyxy, t.class_id):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, cls, score in zip(p.xyxy, p.class_id, p.confidence if len(p) else []):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "score": float(score),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("case", sorted(CASES))
def test_coco_metrics_match_pycocotools(case):
    truths, preds = CASES[case]
    ours = coco_metrics(truths, preds, [SIZE] * len(truths), NAMES)
    reference = pycocotools_stats(truths, preds)
    stats = reference.stats
    expected = {
        "map50_95": stats[0],
        "map50": stats[1],
        "ap_small": stats[3],
        "ap_medium": stats[4],
        "ap_large": stats[5],
    }
    for key, value in expected.items():
        if value < 0:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-4), key
    precision = reference.eval["precision"]
    for k, name in enumerate(NAMES):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        if values.size == 0:
            assert ours["per_class_ap"][name] is None
        else:
            assert ours["per_class_ap"][name] == pytest.approx(values.mean(), abs=1e-4)


@pytest.mark.parametrize(
    ("case", "map50"),
    # wrong_class: nut AP 0; bolt AP 0.5 (the higher-scored wrong-class box comes first)
    [("perfect", 1.0), ("duplicate", 1.0), ("wrong_class", 0.25), ("one_miss", None)],
)
def test_coco_metrics_known_values(case, map50):
    truths, preds = CASES[case]
    ours = coco_metrics(truths, preds, [SIZE] * len(truths), NAMES)
    if map50 is not None:
        assert ours["map50"] == pytest.approx(map50)
    if case == "perfect":
        assert ours["map50_95"] == pytest.approx(1.0)
        assert ours["ap_small"] == pytest.approx(1.0) and ours["ap_medium"] == pytest.approx(1.0)
        assert ours["ap_large"] is None  # no large object in the truth
    if case == "one_miss":
        assert ours["per_class_ap"]["bolt"] == pytest.approx(1.0)
        assert ours["per_class_ap"]["nut"] == pytest.approx(0.5, abs=0.01)


def test_coco_metrics_without_predictions_or_truths():
    truths = [truth(A), truth((0, 0, 20, 20, 0))]
    nothing = coco_metrics(truths, [pred(), pred()], [SIZE] * 2, NAMES)
    assert nothing["map50"] == 0.0 and nothing["map50_95"] == 0.0
    assert nothing["ap_small"] == 0.0 and nothing["ap_large"] is None
    assert nothing["per_class_ap"] == {"nut": 0.0, "bolt": None}
    no_truth = coco_metrics([truth()], [pred((*A, 0.9))], [SIZE], NAMES)
    assert no_truth["map50_95"] is None and no_truth["per_class_ap"] == {"nut": None, "bolt": None}


# -- P/R/F1 at the operating threshold --------------------------------------------------------

PRF_CASES = [
    # case, conf, (tp, fp, fn)
    ("perfect", 0.25, (3, 0, 0)),
    ("one_miss", 0.25, (2, 0, 1)),
    ("duplicate", 0.25, (1, 1, 0)),
    ("wrong_class", 0.25, (1, 1, 1)),
    ("empty_image_with_false_positive", 0.25, (1, 1, 0)),
    ("shifted_and_scored", 0.5, (2, 1, 2)),  # the 0.4 box is below conf; the 0.6 box overlaps A enough
    ("shifted_and_scored", 0.92, (1, 0, 3)),
]


@pytest.mark.parametrize(("case", "conf", "counts"), PRF_CASES)
def test_threshold_metrics_counts(case, conf, counts):
    truths, preds = CASES[case]
    out = threshold_metrics(truths, preds, NAMES, conf=conf, iou=0.5)
    tp, fp, fn = counts
    assert (out["tp"], out["fp"], out["fn"]) == counts
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    assert out["precision"] == pytest.approx(precision, abs=1e-5)
    assert out["recall"] == pytest.approx(recall, abs=1e-5)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert out["f1"] == pytest.approx(f1, abs=1e-5)
    matrix = np.asarray(out["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert np.trace(matrix[:2, :2]) == tp  # the diagonal is exactly the true positives
    assert matrix[:2, :].sum() == sum(len(t) for t in truths)  # every truth lands in one cell of its row


def test_confusion_matrix_cells():
    truths, preds = CASES["wrong_class"]
    matrix = threshold_metrics(truths, preds, NAMES)["confusion_matrix"]
    # A (nut) predicted as bolt; B (bolt) right
    assert matrix == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    truths, preds = CASES["empty_image_with_false_positive"]
    matrix = threshold_metrics(truths, preds, NAMES)["confusion_matrix"]
    assert matrix == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]  # background row: the bolt on the empty image
    truths, preds = CASES["one_miss"]
    matrix = threshold_metrics(truths, preds, NAMES)["confusion_matrix"]
    assert matrix == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]  # background column: the missed nut


def test_matching_takes_highest_score_first_and_best_overlap():
    t = truth((0, 0, 10, 10, 0), (5, 0, 15, 10, 0))
    p = pred((4, 0, 14, 10, 0, 0.5), (5, 0, 15, 10, 0, 0.9))
    assigned, taken = match_image(t, p, 0.3)
    # the 0.9 box takes its exact twin (truth 1); the 0.5 box then gets truth 0 (IoU 6/14 ≈ 0.43)
    assert assigned.tolist() == [0, 1] and taken.all()


def test_compute_metrics_has_the_keys_others_read():
    truths, preds = CASES["perfect"]
    metrics = compute_metrics(truths, preds, [SIZE] * 2, NAMES, conf=0.3, iou=0.5)
    for key in (
        "map50",
        "map50_95",
        "ap_small",
        "ap_medium",
        "ap_large",
        "per_class_ap",
        "precision",
        "recall",
        "f1",
        "conf",
        "iou",
        "confusion_matrix",
    ):
        assert key in metrics
    assert metrics["f1"] == 1.0 and metrics["conf"] == 0.3
    with pytest.raises(ValueError):
        compute_metrics(truths, preds[:1], [SIZE] * 2, NAMES)
