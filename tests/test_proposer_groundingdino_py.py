"""groundingdino-py backend: the package is not installable next to transformers 5, so these test
the one-line errors and the pure phrase -> class and box conversion."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from autolabel.errors import AutolabelError
from autolabel.ontology import Ontology, OntologyClass
from autolabel.proposers import build_proposer
from autolabel.proposers.base import FinalizeOptions, ProposerSettings
from autolabel.proposers.groundingdino_py import RawPhrases, caption_for, phrase_to_class, raw_to_detections

ONTOLOGY = Ontology(
    classes=(
        OntologyClass("bolt", ("bolt", "hex bolt", "Machine Screw.")),
        OntologyClass("nut", ("hex nut", "nut"), box_threshold=0.5),
        OntologyClass("washer", ("flat washer",)),
        OntologyClass("screw", ("wood screw",)),
    )
)
TABLE = ONTOLOGY.prompt_table()


def test_caption_joins_normalized_prompts():
    assert caption_for([p for p, _ in TABLE]) == (
        "bolt . hex bolt . machine screw . hex nut . nut . flat washer . wood screw ."
    )


@pytest.mark.parametrize(
    "phrase, expected",
    [
        ("bolt", 0),
        ("hex bolt", 0),
        ("machine screw", 0),
        ("Machine  Screw", 0),
        ("hex nut", 1),
        ("nut", 1),
        ("flat washer", 2),
        ("wood screw", 3),
        # tokens of neighbouring prompts merged into one phrase: the longest contained prompt wins
        ("hex nut flat", 1),
        ("bolt hex bolt", 0),
        ("washer flat washer", 2),
        # a part of prompts: only when every prompt it is part of has the same class
        ("washer", 2),
        ("flat", 2),
        ("wood", 3),
        ("machine", 0),
        ("hex", None),  # hex bolt (bolt) or hex nut (nut)
        ("screw", None),  # machine screw (bolt) or wood screw (screw)
        # two different classes of equal length in one phrase: ambiguous
        ("bolt nut", None),
        ("", None),
        ("cat", None),
    ],
)
def test_phrase_to_class(phrase, expected):
    assert phrase_to_class(phrase, TABLE) == expected


def post(boxes, scores, phrases, *, default=0.3, max_det=100, size=(200, 100), nms_iou=None):
    raw = RawPhrases(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(scores, dtype=np.float32),
        tuple(phrases),
    )
    options = FinalizeOptions(
        thresholds=tuple(ONTOLOGY.thresholds(default)), max_det=max_det, nms_iou=nms_iou
    )
    return raw_to_detections(raw, TABLE, options, width=size[0], height=size[1])


@pytest.mark.parametrize(
    "box, size, expected_xyxy",
    [
        ((0.5, 0.5, 0.2, 0.4), (200, 100), (80, 30, 120, 70)),
        ((0.5, 0.5, 1.0, 1.0), (640, 480), (0, 0, 640, 480)),
        ((0.05, 0.1, 0.2, 0.4), (200, 100), (0, 0, 30, 30)),  # clipped at the left/top edge
        ((0.25, 0.75, 0.1, 0.1), (37, 91), (7.4, 63.7, 11.1, 72.8)),
    ],
)
def test_normalized_cxcywh_to_pixel_xyxy(box, size, expected_xyxy):
    det = post([box], [0.9], ["bolt"], size=size)
    np.testing.assert_allclose(det.xyxy[0], expected_xyxy, atol=1e-3)


def test_classes_thresholds_and_dropped_phrases():
    det = post(
        [
            (0.2, 0.2, 0.1, 0.1),
            (0.4, 0.4, 0.1, 0.1),
            (0.6, 0.6, 0.1, 0.1),
            (0.8, 0.8, 0.1, 0.1),
            (0.5, 0.5, 0.1, 0.1),
        ],
        [0.9, 0.45, 0.55, 0.8, 0.7],
        ["hex bolt", "nut", "hex nut", "hex", "wood screw"],
    )
    # 'nut' at 0.45 is under its class threshold 0.5; 'hex' names no single class
    assert det.class_id.tolist() == [0, 1, 3]
    np.testing.assert_allclose(det.confidence, [0.9, 0.55, 0.7], atol=1e-6)
    assert len(post([], [], [])) == 0
    top = post([(0.2, 0.2, 0.1, 0.1), (0.6, 0.6, 0.1, 0.1)], [0.4, 0.9], ["bolt", "flat washer"], max_det=1)
    assert top.class_id.tolist() == [2]


def test_missing_package_is_one_line_error_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "groundingdino", None)  # as if not installed
    with pytest.raises(AutolabelError) as info:
        build_proposer(ProposerSettings(model="groundingdino-py", device="cpu"), ONTOLOGY)
    message = str(info.value)
    assert "\n" not in message
    assert "pip install groundingdino-py" in message and "transformers" in message
    assert "get_extended_attention_mask" in message and "--model grounding-dino" in message


def test_installed_package_with_transformers_5_is_refused(tmp_path, monkeypatch):
    import transformers

    package = tmp_path / "groundingdino" / "util"
    package.mkdir(parents=True)
    (tmp_path / "groundingdino" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "inference.py").write_text(
        "def load_model(config, checkpoint, device='cuda'):\n    raise AssertionError\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "groundingdino" or m.startswith("groundingdino.")]:
        monkeypatch.delitem(sys.modules, name)
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.fail("this environment is expected to pin transformers 5")
    with pytest.raises(AutolabelError, match=f"transformers is {transformers.__version__}"):
        build_proposer(ProposerSettings(model="groundingdino-py", device="cpu"), ONTOLOGY)
