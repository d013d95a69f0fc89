"""StudentProposer: the pure postprocess as a table, and a real (random-weight) YOLO model."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import AutolabelError
from autolabel.proposers.base import FinalizeOptions
from autolabel.proposers.student import StudentProposer, raw_to_detections
from autolabel.students.base import RawBoxes


def raw(rows):
    """(x1, y1, x2, y2, score, class)"""
    arr = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    return RawBoxes(xyxy=arr[:, :4], confidence=arr[:, 4], class_id=arr[:, 5].astype(int))


@pytest.mark.parametrize(
    ("rows", "conf", "max_det", "expected"),
    [
        ([], 0.25, 10, []),
        ([(1, 1, 5, 5, 0.9, 0)], 0.25, 10, [(1, 1, 5, 5, 0)]),
        ([(1, 1, 5, 5, 0.1, 0)], 0.25, 10, []),  # below conf
        ([(-3, 2, 5, 70, 0.9, 1)], 0.25, 10, [(0, 2, 5, 48, 1)]),  # clipped to the 64x48 image
        ([(70, 2, 90, 9, 0.9, 1)], 0.25, 10, []),  # entirely outside: dropped
        (
            [(1, 1, 5, 5, 0.5, 0), (2, 2, 6, 6, 0.9, 1), (3, 3, 7, 7, 0.7, 0)],
            0.0,
            2,
            [(2, 2, 6, 6, 1), (3, 3, 7, 7, 0)],
        ),
    ],
)
def test_postprocess_table(rows, conf, max_det, expected):
    options = FinalizeOptions(thresholds=(conf, conf), max_det=max_det)  # two classes
    det = raw_to_detections(raw(rows), options, height=48, width=64)
    got = [(*[round(float(v), 3) for v in box], int(c)) for box, c in zip(det.xyxy, det.class_id)]
    assert sorted(got) == sorted(expected)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """yolo11n with random weights, 3 classes, saved the way a training run saves it."""
    from autolabel.runtime import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("student") / "random.pt"
    model = YOLO("yolo11n.yaml")
    model.model.names = {0: "bolt", 1: "nut", 2: "washer"}
    model.save(str(path))
    return path


def test_student_predicts_in_original_pixels_and_takes_rgb(random_weights):
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (48, 96, 3), dtype=np.uint8),
        rng.integers(0, 255, (80, 40, 3), dtype=np.uint8),
    ]
    student = StudentProposer(random_weights, conf=0.0, max_det=50, imgsz=64, device="cpu", batch_size=1)
    assert student.model_version.startswith("student:random.pt:")
    out = student.predict(images)
    assert len(out) == 2
    for image, det in zip(images, out):
        assert 0 < len(det) <= 50
        assert (det.xyxy[:, [0, 2]] <= image.shape[1]).all() and (det.xyxy[:, [1, 3]] <= image.shape[0]).all()
        assert (det.xyxy >= 0).all() and det.confidence is not None
    # the same model fed the BGR array directly gives the same boxes: the RGB -> BGR flip is ours
    direct = student.student.model.predict(
        np.ascontiguousarray(images[0][..., ::-1]),
        conf=0.0,
        imgsz=64,
        max_det=50,
        device="cpu",
        verbose=False,
    )[0]
    np.testing.assert_allclose(
        np.sort(out[0].xyxy, axis=0), np.sort(direct.boxes.xyxy.numpy().clip(0, None), axis=0), atol=1e-3
    )
    assert student.predict([]) == []


def test_missing_weights_is_a_user_error(tmp_path):
    with pytest.raises(AutolabelError, match="student weights not found"):
        StudentProposer(tmp_path / "nope.pt")
