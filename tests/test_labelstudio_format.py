"""Label Studio JSON <-> detections: tables of results and the boxes they must become."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel.formats import labelstudio as lsfmt

NAMES = ["bolt", "nut", "washer"]


def _rect(x, y, w, h, label="bolt", rotation=0, ow=200, oh=100, **extra):
    return {
        "id": "r",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": ow,
        "original_height": oh,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
        **extra,
    }


@pytest.mark.parametrize(
    "result, xyxy, cls, counts",  # counts: (clipped, rotated)
    [
        (_rect(10, 20, 30, 40), [20, 20, 80, 60], 0, (0, 0)),
        (_rect(0, 0, 100, 100, "washer"), [0, 0, 200, 100], 2, (0, 0)),
        # 90 degrees clockwise around the top-left corner (50, 50) px: 40x20 px becomes 20x40 px.
        (_rect(25, 50, 20, 20, "nut", rotation=90), [30, 50, 50, 90], 1, (0, 1)),
        # 180 degrees: the box flips to the upper left of its anchor.
        (_rect(50, 50, 10, 10, rotation=180), [80, 40, 100, 50], 0, (0, 1)),
        # 45 degrees: the enclosing box of a 20x20 px square.
        (
            _rect(50, 50, 10, 20, rotation=45),
            [100 - 20 / 2**0.5, 50, 100 + 20 / 2**0.5, 50 + 40 / 2**0.5],
            0,
            (0, 1),
        ),
        # Partly outside: clipped to the image and counted.
        (_rect(-10, 90, 30, 20), [0, 90, 40, 100], 0, (1, 0)),
        # Annotated on a half-size rendition: percent still maps to the stored size.
        (_rect(10, 20, 30, 40, ow=100, oh=50), [20, 20, 80, 60], 0, (0, 0)),
    ],
)
def test_results_to_pixel_boxes(result, xyxy, cls, counts):
    conv = lsfmt.from_results([result], NAMES, 200, 100)
    np.testing.assert_allclose(conv.detections.xyxy, [xyxy], atol=1e-3)
    assert conv.detections.class_id.tolist() == [cls]
    assert (conv.clipped, conv.rotated) == counts and conv.usable


@pytest.mark.parametrize(
    "results, n_boxes, unknown, ignored",
    [
        ([], 0, set(), 0),  # verified empty image
        (
            [_rect(1, 1, 5, 5, "screw"), _rect(1, 1, 5, 5, "rivet"), _rect(1, 1, 5, 5)],
            1,
            {"screw", "rivet"},
            0,
        ),
        ([{"type": "choices", "value": {"choices": ["blurry"]}}, _rect(1, 1, 5, 5)], 1, set(), 1),
        ([{"type": "textarea", "value": {"text": ["ok"]}}], 0, set(), 1),  # no region: still verified empty
    ],
)
def test_results_edge_cases(results, n_boxes, unknown, ignored):
    conv = lsfmt.from_results(results, NAMES, 200, 100)
    assert len(conv.detections) == n_boxes
    assert (conv.unknown_labels, conv.ignored, conv.refused) == (unknown, ignored, [])


def _value(**changes):
    item = _rect(10, 10, 20, 20)
    for key, v in changes.items():
        if v is _DROP:
            del item["value"][key]
        else:
            item["value"][key] = v
    return item


_DROP = object()
# What a hostile or buggy client can send; none of it may become labels, none of it may raise,
# and never may it turn an annotated image into "verified empty".
MALFORMED = [
    (_value(x=_DROP), "missing 'x'"),
    (_value(y=_DROP), "missing 'y'"),
    (_value(width=_DROP), "missing 'width'"),
    (_value(height=_DROP), "missing 'height'"),
    (_value(x="abc"), "'x' is not a finite number"),
    (_value(y=None), "'y' is not a finite number"),
    (_value(width=float("nan")), "'width' is not a finite number"),
    (_value(x=float("inf")), "'x' is not a finite number"),
    (_value(x=True), "'x' is not a finite number"),
    (_value(width=-5), "width/height must be positive"),
    (_value(height=0), "width/height must be positive"),
    (_value(x=1e9), "far outside"),
    (_value(x=120), "outside the image"),
    (_value(rotation="left"), "'rotation' is not a finite number"),
    (_value(rectanglelabels=[]), "a rectangle without a label"),
    (_value(rectanglelabels="bolt"), "a rectangle without a label"),
    ({**_rect(1, 1, 5, 5), "original_width": 0}, "'original_width' must be a positive number"),
    (
        {"type": "polygonlabels", "value": {"points": [[1, 1], [5, 1], [5, 5]], "polygonlabels": ["bolt"]}},
        "polygonlabels regions are not supported",
    ),
    (
        {"type": "keypointlabels", "value": {"x": 5, "y": 5, "keypointlabels": ["bolt"]}},
        "keypointlabels regions are not supported",
    ),
    (
        {"type": "brushlabels", "value": {"rle": [1, 2], "brushlabels": ["bolt"]}},
        "brushlabels regions are not supported",
    ),
    (
        {
            "type": "ellipselabels",
            "value": {"x": 5, "y": 5, "radiusX": 2, "radiusY": 2, "ellipselabels": ["bolt"]},
        },
        "ellipselabels regions are not supported",
    ),
    ("not a dict", "not an object"),
    ({"type": "rectanglelabels", "value": "x"}, "'value' is not an object"),
]


@pytest.mark.parametrize("result, reason", MALFORMED)
def test_malformed_results_are_refused_with_a_reason(result, reason):
    conv = lsfmt.from_results([result, _rect(50, 50, 10, 10, "nut", id="other")], NAMES, 200, 100)
    assert not conv.usable
    assert len(conv.refused) == 1 and reason in conv.refused[0], conv.refused


def test_duplicated_region_ids_and_a_result_that_is_not_a_list_are_refused():
    twice = lsfmt.from_results([_rect(1, 1, 5, 5, id="a"), _rect(1, 1, 5, 5, id="a")], NAMES, 200, 100)
    assert not twice.usable and "appears twice" in twice.refused[0]
    assert not lsfmt.from_results({"x": 1}, NAMES, 200, 100).usable


@pytest.mark.parametrize("width, height", [(640, 480), (97, 211), (4000, 3000)])
def test_round_trip_is_exact_to_a_hundredth_of_a_pixel(width, height):
    rng = np.random.default_rng(width)
    x1 = rng.uniform(0, width * 0.8, 20)
    y1 = rng.uniform(0, height * 0.8, 20)
    xyxy = np.stack([x1, y1, x1 + rng.uniform(1, width * 0.2, 20), y1 + rng.uniform(1, height * 0.2, 20)], 1)
    det = dets.make(xyxy, rng.integers(0, 3, 20), rng.uniform(0, 1, 20))
    results = lsfmt.to_results(det, NAMES, width, height)
    assert all(0 <= r["value"]["x"] <= 100 and r["from_name"] == "label" for r in results)
    back = lsfmt.from_results(results, NAMES, width, height)
    np.testing.assert_allclose(back.detections.xyxy, det.xyxy, atol=0.01)
    assert back.detections.class_id.tolist() == det.class_id.tolist()
    np.testing.assert_allclose(back.detections.confidence, det.confidence, atol=1e-5)


def test_prediction_has_model_version_and_task_score():
    det = dets.make([[0, 0, 10, 10], [5, 5, 20, 20]], [0, 1], [0.2, 0.6])
    pred = lsfmt.prediction(det, NAMES, 100, 100, "gdino-tiny@abc")
    assert pred["model_version"] == "gdino-tiny@abc"
    assert pred["score"] == pytest.approx(0.4)
    assert [r["score"] for r in pred["result"]] == pytest.approx([0.2, 0.6])
    assert lsfmt.prediction(dets.empty(), NAMES, 100, 100, "m")["score"] == 0.0


def test_label_config_keeps_class_order_and_escapes_names():
    names = ["bolt", 'odd "quoted" <name> & co', "nut"]
    root = ET.fromstring(lsfmt.label_config(names))
    labels = [lab.get("value") for lab in root.iter("Label")]
    assert labels == names
    assert root.find("Image").get("value") == "$image"
    # Appending a class keeps every earlier label (and its colour) where it was.
    longer = ET.fromstring(lsfmt.label_config(names + ["washer"]))
    assert [lab.attrib for lab in longer.iter("Label")][:3] == [lab.attrib for lab in root.iter("Label")]
