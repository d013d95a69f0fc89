"""Format round trips as tables: YOLO lines <-> internal (pixel xyxy) <-> COCO."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autolabel import detections as dets
from autolabel.formats import coco, yolo
from autolabel.formats.yolo import YoloFormatError

TOL = 1e-3  # pixels

# (lines, width, height, expected xyxy, expected class ids, expected scores or None)
YOLO_TABLE = [
    pytest.param([], 200, 100, [], [], None, id="empty image"),
    pytest.param(["", "   "], 200, 100, [], [], None, id="blank lines only"),
    pytest.param(["0 0.5 0.5 0.2 0.4"], 200, 100, [[80, 30, 120, 70]], [0], None, id="one box"),
    pytest.param(["3 0.5 0.5 1 1"], 640, 480, [[0, 0, 640, 480]], [3], None, id="whole image"),
    pytest.param(
        ["1 0.05 0.1 0.1 0.2", "2 0.95 0.9 0.1 0.2"],
        200,
        100,
        [[0, 0, 20, 20], [180, 80, 200, 100]],
        [1, 2],
        None,
        id="touching the corners",
    ),
    pytest.param(
        ["0 0.5 0.5 0.2 0.2 0.875", "1 0.25 0.25 0.1 0.1 0.5"],
        100,
        100,
        [[40, 40, 60, 60], [20, 20, 30, 30]],
        [0, 1],
        [0.875, 0.5],
        id="scores column",
    ),
    pytest.param(
        ["2.0 0.5 0.5 0.5 0.5"], 10, 10, [[2.5, 2.5, 7.5, 7.5]], [2], None, id="class written as 2.0"
    ),
    pytest.param(
        ["7   0.5\t0.5 0.25 0.5  "], 37, 91, [[13.875, 22.75, 23.125, 68.25]], [7], None, id="odd spacing"
    ),
]


@pytest.mark.parametrize("lines, width, height, xyxy, class_ids, scores", YOLO_TABLE)
def test_yolo_lines_to_internal(lines, width, height, xyxy, class_ids, scores):
    det = yolo.from_lines(lines, width, height)
    assert len(det) == len(class_ids)
    if not class_ids:
        return
    np.testing.assert_allclose(det.xyxy, xyxy, atol=TOL)
    assert det.class_id.tolist() == class_ids
    if scores is None:
        assert det.confidence is None
    else:
        np.testing.assert_allclose(det.confidence, scores, atol=1e-6)


@pytest.mark.parametrize("lines, width, height, xyxy, class_ids, scores", YOLO_TABLE)
def test_yolo_lines_survive_internal_and_coco(lines, width, height, xyxy, class_ids, scores):
    det = yolo.from_lines(lines, width, height)
    names = [f"c{i}" for i in range(8)]
    data = coco.dataset(names, [(5, "a/b.jpg", width, height, det)], with_scores=True)
    back = coco.image_detections(data)[5]
    assert len(back) == len(det)
    if len(det):
        np.testing.assert_allclose(back.xyxy, det.xyxy, atol=TOL)
        assert back.class_id.tolist() == det.class_id.tolist()
        assert (back.confidence is None) == (scores is None)
    again = yolo.to_lines(back, width, height, with_scores=scores is not None)
    expected = [_numbers(line) for line in lines if line.strip()]
    assert [len(n) for n in map(_numbers, again)] == [len(n) for n in expected]
    for got, want in zip(map(_numbers, again), expected):
        assert got == pytest.approx(want, abs=1e-6)


def _numbers(line: str) -> list[float]:
    return [float(v) for v in line.split()]


@pytest.mark.parametrize(
    "lines, message",
    [
        (["0 0.5 0.5 0.2"], "line 1: expected 'class cx cy w h \\[score\\]'"),
        (["0 0.5 0.5 0.2 0.2 0.9 1"], "line 1: expected"),
        (["", "bolt 0.5 0.5 0.2 0.2"], "line 2: not numbers"),
        (["0 0.5 0.5 0.2 high"], "line 1: not numbers"),
        (["1.5 0.5 0.5 0.2 0.2"], "line 1: class id must be an integer, got 1.5"),
        (["-1 0.5 0.5 0.2 0.2"], "line 1: class id must not be negative"),
        (["0 0.5 0.5 0.2 0.2", "0 nan 0.5 0.2 0.2"], "line 2: not finite"),
        (["0 0.5 inf 0.2 0.2"], "line 1: not finite"),
        (["0 0.5 0.5 -0.2 0.2"], "line 1: negative width or height"),
    ],
)
def test_malformed_yolo_lines_name_the_line(lines, message):
    with pytest.raises(YoloFormatError, match=message):
        yolo.from_lines(lines, 100, 100)


# (xyxy, class ids, scores, width, height)
INTERNAL_TABLE = [
    pytest.param([], [], None, 64, 48, id="empty"),
    pytest.param([[0, 0, 64, 48]], [0], None, 64, 48, id="whole image"),
    pytest.param([[0, 10.25, 5.5, 48]], [2], [0.31], 64, 48, id="left and bottom edge"),
    pytest.param(
        [[10.01, 20.02, 30.03, 40.04], [1.5, 2.5, 3.5, 4.5]], [1, 0], [0.9, 0.12345], 999, 777, id="fractions"
    ),
    pytest.param(
        [[3999, 2999, 4000, 3000]], [5], None, 4000, 3000, id="1 px at the far corner of a large image"
    ),
]


@pytest.mark.parametrize("xyxy, class_ids, scores, width, height", INTERNAL_TABLE)
def test_internal_yolo_internal(xyxy, class_ids, scores, width, height):
    det = dets.make(xyxy, class_ids, scores) if class_ids else dets.empty()
    lines = yolo.to_lines(det, width, height, with_scores=True)
    assert len(lines) == len(class_ids)
    back = yolo.from_lines(lines, width, height)
    assert len(back) == len(det)
    if class_ids:
        np.testing.assert_allclose(back.xyxy, xyxy, atol=TOL * max(1, max(width, height) / 1000))
        assert back.class_id.tolist() == class_ids
        if scores is not None:
            np.testing.assert_allclose(back.confidence, scores, atol=1e-5)


@pytest.mark.parametrize("xyxy, class_ids, scores, width, height", INTERNAL_TABLE)
def test_internal_coco_internal(xyxy, class_ids, scores, width, height):
    det = dets.make(xyxy, class_ids, scores) if class_ids else dets.empty()
    names = [f"class{i}" for i in range(6)]
    data = coco.dataset(
        names,
        [(1, "x.jpg", width, height, det), (2, "empty.jpg", width, height, dets.empty())],
        with_scores=True,
    )
    assert [c["id"] for c in data["categories"]] == list(range(1, 7))
    assert [im["file_name"] for im in data["images"]] == ["x.jpg", "empty.jpg"]
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"]) == len(class_ids)
    back = coco.image_detections(data)
    assert len(back[2]) == 0
    assert len(back[1]) == len(class_ids)
    if class_ids:
        np.testing.assert_allclose(back[1].xyxy, xyxy, atol=TOL)
        assert back[1].class_id.tolist() == class_ids
        assert [a["category_id"] for a in data["annotations"]] == [c + 1 for c in class_ids]
        if scores is None:
            assert back[1].confidence is None
        else:
            np.testing.assert_allclose(back[1].confidence, scores, atol=1e-5)


def test_coco_without_scores_has_no_score_key():
    det = dets.make([[1, 2, 3, 4]], [0], [0.5])
    data = coco.dataset(["a"], [(1, "x.jpg", 10, 10, det)], with_scores=False)
    assert "score" not in data["annotations"][0]
    assert data["annotations"][0]["bbox"] == [1, 2, 2, 2] and data["annotations"][0]["area"] == 4


def test_internal_json_round_trip_keeps_boxes_and_missing_scores():
    det = dets.make([[0.004, 1.016, 30.5, 40.25]], [3])
    back = dets.from_json(dets.to_json(det))
    np.testing.assert_allclose(back.xyxy, [[0.0, 1.02, 30.5, 40.25]], atol=1e-5)
    assert back.confidence is None and back.class_id.tolist() == [3]


boxes_on_centipixel_grid = st.integers(0, 100_000).map(lambda v: v / 100)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 1000),
    height=st.integers(1, 1000),
    corners=st.lists(st.tuples(*[boxes_on_centipixel_grid] * 4), min_size=0, max_size=5),
    classes=st.lists(st.integers(0, 9), min_size=5, max_size=5),
)
def test_round_trips_within_a_thousandth_of_a_pixel(width, height, corners, classes):
    """Any box on the store's 1/100 px grid survives YOLO and COCO within 1e-3 px (images up to 1000 px)."""
    boxes = []
    for x1, y1, x2, y2 in corners:
        x1, x2 = sorted((min(x1, width), min(x2, width)))
        y1, y2 = sorted((min(y1, height), min(y2, height)))
        boxes.append([x1, y1, x2, y2])
    det = dets.make(boxes, classes[: len(boxes)]) if boxes else dets.empty()
    via_yolo = yolo.from_lines(yolo.to_lines(det, width, height), width, height)
    via_coco = coco.image_detections(
        coco.dataset([str(i) for i in range(10)], [(1, "a.jpg", width, height, det)])
    )[1]
    for back in (via_yolo, via_coco):
        assert len(back) == len(det)
        if boxes:
            np.testing.assert_allclose(back.xyxy, det.xyxy, atol=TOL)
            assert back.class_id.tolist() == det.class_id.tolist()


# (parsed data.yaml, expected names or the error it raises)
NAMES_TABLE = [
    pytest.param({"names": ["bolt", "nut"]}, ["bolt", "nut"], id="list"),
    pytest.param({"names": {0: "bolt", 1: "nut"}}, ["bolt", "nut"], id="int ids"),
    pytest.param({"names": {"1": "nut", "0": "bolt"}}, ["bolt", "nut"], id="string ids, any order"),
    pytest.param({"names": {0: 7}}, ["7"], id="names become strings"),
    pytest.param({"names": {0: "bolt", 2: "nut"}}, "ids 0..n-1", id="a gap in the ids"),
    pytest.param({"names": {"a": "bolt"}}, "integer ids", id="ids that are not numbers"),
    pytest.param({"nc": 2}, "no 'names'", id="no names"),
    pytest.param(None, "no 'names'", id="empty file"),
]


@pytest.mark.parametrize("data, expected", NAMES_TABLE)
def test_data_yaml_names(data, expected):
    if isinstance(expected, str):
        with pytest.raises(YoloFormatError, match=expected):
            yolo.names_from_yaml(data, "data.yaml")
    else:
        assert yolo.names_from_yaml(data, "data.yaml") == expected


def test_class_names_are_found_up_to_the_given_levels(tmp_path):
    (tmp_path / "data.yaml").write_text(yolo.data_yaml(["bolt", "nut"], "images", "images"))
    labels = tmp_path / "labels" / "train"
    labels.mkdir(parents=True)
    assert yolo.read_class_names(labels) is None
    assert yolo.read_class_names(labels, levels=3) == ["bolt", "nut"]
    (labels / "classes.txt").write_text("washer\n\nscrew\n")
    assert yolo.read_class_names(labels, levels=3) == ["washer", "screw"]


def test_label_files_round_trip(tmp_path):
    det = dets.make([[10, 20, 50, 60]], [1])
    yolo.write_label_file(tmp_path / "a" / "b.txt", det, 100, 80)
    assert (tmp_path / "a" / "b.txt").read_text() == "1 0.300000 0.500000 0.400000 0.500000\n"
    back = yolo.read_label_file(tmp_path / "a" / "b.txt", 100, 80)
    np.testing.assert_allclose(back.xyxy, det.xyxy, atol=TOL)
    yolo.write_label_file(tmp_path / "empty.txt", dets.empty(), 100, 80)
    assert (tmp_path / "empty.txt").read_text() == ""
