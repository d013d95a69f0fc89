"""Per-class pre-label thresholds: the calibration picks what the cost model says is cheapest."""

from __future__ import annotations

import pytest

from autolabel import calibration
from autolabel import detections as dets
from autolabel.studio.diff import CostModel

COSTS = CostModel()  # draw 7.0, verify 1.6, delete 2.0, per_image 2.0
GT = [10, 10, 50, 50]
FAR = [[200, 200, 240, 240], [300, 300, 340, 340], [400, 400, 440, 440]]


def pair(class_id: int, true_conf: float | None, false_confs: list[float]):
    """One image with one object of ``class_id``: the student's box on it (at ``true_conf``, or
    missed when None) and false boxes of the same class far away."""
    xyxy, confs = [], []
    if true_conf is not None:
        xyxy.append(GT)
        confs.append(true_conf)
    for box, conf in zip(FAR, false_confs):
        xyxy.append(box)
        confs.append(conf)
    prediction = dets.make(xyxy, [class_id] * len(xyxy), confs) if xyxy else dets.empty()
    return prediction, dets.make([GT], [class_id])


# Hand-computed, per image:
#   true box shown: verify 1.6, hidden: draw 7.0; each false box shown: delete 2.0.
CASES = [
    # true 0.40, false 0.60: t<=0.40 -> 3.6; 0.40<t<=0.60 -> 9.0; t>0.60 -> 7.0  => the highest t <= 0.40
    pytest.param([(0.40, [0.60])], 0.40, id="a-confident-false-box-is-worth-showing-the-true-one"),
    # false 0.30, 0.50, true 0.80: t<=0.3 -> 5.6; <=0.5 -> 3.6; <=0.8 -> 1.6; >0.8 -> 7.0  => 0.80
    pytest.param([(0.80, [0.30, 0.50])], 0.80, id="true-box-on-top-hide-the-doubtful"),
    # true 0.10 and three false at 0.20..0.30: t<=0.10 -> 7.6; (0.10,0.30] -> 9.0..11.0; >0.30 -> 7.0  => 0.95
    pytest.param([(0.10, [0.20, 0.25, 0.30])], 0.95, id="mostly-false-show-nothing"),
    # two images: true 0.30 (+ false 0.90) and true 0.70:
    #   t<=0.3: (1.6+2)+1.6=5.2; (0.3,0.7]: (7+2)+1.6=10.6; (0.7,0.9]: (7+2)+7=16; >0.9: 7+7=14  => 0.30
    pytest.param([(0.30, [0.90]), (0.70, [])], 0.30, id="two-images"),
]


@pytest.mark.parametrize("images, expected", CASES)
def test_calibration_picks_the_cheapest_threshold(images, expected):
    pairs = [pair(0, t, f) for t, f in images] * 5  # min_pairs is 5
    result = calibration.calibrate(pairs, n_classes=1, costs=COSTS)
    assert result.thresholds == (pytest.approx(expected),)
    # the chosen threshold really is the cheapest on the grid, and no dearer than the 0.25 default
    best = min(calibration.correction_seconds(pairs, [t], COSTS) for t in calibration.GRID)
    assert result.seconds == pytest.approx(best)
    assert result.seconds <= result.seconds_default


def test_classes_are_calibrated_independently():
    pairs = [pair(0, 0.40, [0.60]), pair(1, 0.80, [0.30, 0.50])] * 5
    result = calibration.calibrate(pairs, n_classes=3, costs=COSTS)
    assert result.thresholds[:2] == (pytest.approx(0.40), pytest.approx(0.80))
    assert result.thresholds[2] == calibration.DEFAULT_THRESHOLD  # nothing seen: the default stays


def test_cost_model_changes_the_choice():
    # drawing is cheap and deleting dear: a doubtful true box is no longer worth its false neighbour
    pairs = [pair(0, 0.40, [0.60])] * 5
    cheap_draw = CostModel(draw=2.0, delete=6.0)
    assert calibration.calibrate(pairs, 1, COSTS).thresholds == (pytest.approx(0.40),)
    assert calibration.calibrate(pairs, 1, cheap_draw).thresholds == (pytest.approx(0.95),)


def test_too_few_pairs_keep_the_default():
    result = calibration.calibrate([pair(0, 0.9, [])] * 4, n_classes=2, costs=COSTS)
    assert result.thresholds == (calibration.DEFAULT_THRESHOLD,) * 2 and result.pairs == 4


def test_seconds_match_the_cost_model_by_hand():
    pairs = [pair(0, 0.80, [0.30, 0.50])]
    assert calibration.correction_seconds(pairs, [0.25], COSTS) == pytest.approx(2.0 + 1.6 + 2 * 2.0)
    assert calibration.correction_seconds(pairs, [0.9], COSTS) == pytest.approx(2.0 + 7.0)
    assert calibration.from_scratch_seconds(pairs, COSTS) == pytest.approx(2.0 + 7.0)


def test_the_loop_records_one_calibration_per_round(tmp_path):
    from autolabel.store import Store

    store = Store.open(tmp_path / "state.db")
    store.ensure_classes(["bolt"])
    rows = []
    for i in range(6):
        store.add_images(
            [
                {
                    "path": f"{i}.png",
                    "sha256": f"{i:064d}",
                    "size_bytes": 1,
                    "width": 500,
                    "height": 500,
                    "source_group": "g",
                    "status": "unlabeled",
                }
            ]
        )
    for image in store.images():
        prediction, human = pair(0, 0.80, [0.30, 0.50])
        rows.append((image.id, "student:run-1", "student:best.pt:abc", dets.to_json(prediction), None))
        store.set_labels(image.id, "replay", dets.to_json(human))
    store.save_predictions(rows)
    fit = calibration.calibrate_round(store, 2, COSTS)
    assert fit.thresholds == (pytest.approx(0.80),) and fit.pairs == 6
    # recorded before use, and a rerun of the round (after a crash) reuses it unchanged
    store.set_labels(store.images()[0].id, "replay", dets.to_json(dets.empty()))
    assert calibration.calibrate_round(store, 2, COSTS) == calibration.recorded_thresholds(store)[2] == fit
    store.close()
