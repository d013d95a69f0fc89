"""The replay annotator's answers from YOLO ground truth, with and without noise (no server needed:
a task is the JSON Label Studio returns; submitting is covered in test_studio_sync.py)."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import AutolabelError
from autolabel.formats import labelstudio as lsfmt
from autolabel.studio import replay

NAMES = ["bolt", "nut"]


@pytest.fixture()
def gt(tmp_path):
    (tmp_path / "labels").mkdir()
    lines = ["0 0.25 0.25 0.2 0.2", "1 0.75 0.5 0.3 0.4", "0 0.5 0.8 0.1 0.1"]
    (tmp_path / "labels" / "img_1.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "labels" / "img_2.txt").write_text("")
    (tmp_path / "data.yaml").write_text("names: {0: bolt, 1: nut}\n")
    return tmp_path


def _task(task_id: int, stem: str, width: int = 200, height: int = 100) -> dict:
    pred = {"result": [{"original_width": width, "original_height": height, "value": {}}]}
    return {
        "id": task_id,
        "data": {"image": f"/data/local-files/?d=images/{stem}.jpg", "autolabel_path": f"{stem}.jpg"},
        "predictions": [pred],
    }


def test_exact_answer_matches_ground_truth(gt):
    assert replay.class_names_from(gt) == NAMES
    result, n = replay.build_answer(_task(1, "img_1"), gt, NAMES, replay.Noise())
    assert n == 3
    conv = lsfmt.from_results(result, NAMES, 200, 100)
    np.testing.assert_allclose(conv.detections.xyxy[0], [30, 15, 70, 35], atol=1e-3)
    assert conv.detections.class_id.tolist() == [0, 1, 0]
    empty, n_empty = replay.build_answer(_task(2, "img_2"), gt, NAMES, replay.Noise())
    assert (empty, n_empty) == ([], 0)


@pytest.mark.parametrize(
    "noise, check",
    [
        (replay.Noise(miss_rate=1.0), lambda res, n: n == 0),
        (replay.Noise(skip_rate=1.0), lambda res, n: res is None),
        (replay.Noise(jitter=0.2, seed=3), lambda res, n: n >= 1),
    ],
)
def test_noise(gt, noise, check):
    result, n = replay.build_answer(_task(1, "img_1"), gt, NAMES, noise)
    assert check(result, n)


def test_jitter_is_seeded_and_stays_inside_the_image(gt):
    noise = replay.Noise(jitter=0.3, seed=7)
    first, _ = replay.build_answer(_task(1, "img_1"), gt, NAMES, noise)
    again, _ = replay.build_answer(_task(1, "img_1"), gt, NAMES, noise)
    other, _ = replay.build_answer(_task(1, "img_1"), gt, NAMES, replay.Noise(jitter=0.3, seed=8))
    assert first == again and first != other
    boxes = lsfmt.from_results(first, NAMES, 200, 100)
    assert boxes.clipped == 0 and (boxes.detections.xyxy >= 0).all()
    exact = lsfmt.from_results(
        replay.build_answer(_task(1, "img_1"), gt, NAMES, replay.Noise())[0], NAMES, 200, 100
    )
    assert not np.allclose(boxes.detections.xyxy, exact.detections.xyxy[: len(boxes.detections)])


def test_bad_inputs_are_one_line_errors(gt):
    with pytest.raises(AutolabelError):
        replay.Noise(miss_rate=1.5)
    with pytest.raises(AutolabelError, match="no ground truth"):
        replay.build_answer(_task(1, "missing"), gt, NAMES, replay.Noise())
    with pytest.raises(AutolabelError, match="class id 1 has no name"):
        replay.build_answer(_task(1, "img_1"), gt, ["bolt"], replay.Noise())
