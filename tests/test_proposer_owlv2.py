"""OWLv2: prompt -> class scores and padded-square boxes (pure), and the real tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import AutolabelError
from autolabel.ontology import Ontology
from autolabel.proposers import build_proposer
from autolabel.proposers.base import FinalizeOptions, ProposerSettings
from autolabel.proposers.owlv2 import (
    Owlv2Output,
    class_scores,
    detections_from_output,
    padded_square_to_pixels,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize(
    ("size", "cxcywh", "xyxy"),
    [
        # (h, w): landscape pads at the bottom to a 200 px square
        ((100, 200), [0.5, 0.25, 0.2, 0.1], [80, 40, 120, 60]),
        ((100, 200), [0.1, 0.4, 0.2, 0.2], [0, 60, 40, 100]),  # touches the bottom of the real image
        # portrait pads on the right to a 300 px square
        ((300, 150), [0.25, 0.5, 0.1, 0.2], [60, 120, 90, 180]),
        ((300, 150), [0.45, 0.9, 0.1, 0.2], [120, 240, 150, 300]),
        ((64, 64), [0.5, 0.5, 1.0, 1.0], [0, 0, 64, 64]),
    ],
)
def test_boxes_are_normalized_to_the_padded_square(size, cxcywh, xyxy):
    np.testing.assert_allclose(padded_square_to_pixels(np.array([cxcywh]), size), [xyxy], atol=1e-9)


def test_class_score_is_the_max_over_its_prompts():
    # prompts: class 0 has two, class 1 one, class 2 two
    prompt_classes = [0, 0, 1, 2, 2]
    logits = np.array(
        [
            [-5.0, 3.0, 0.0, -5.0, -5.0],  # second prompt of class 0 wins
            [-5.0, -5.0, 1.0, 2.0, -5.0],  # class 2 (2.0) over class 1 (1.0)
            [-5.0, -5.0, -5.0, -5.0, -5.0],
        ]
    )
    scores = class_scores(logits, prompt_classes, 3)
    sig = lambda v: 1 / (1 + np.exp(-v))
    np.testing.assert_allclose(scores[0], [sig(3.0), sig(0.0), sig(-5.0)])
    np.testing.assert_allclose(scores[1], [sig(-5.0), sig(1.0), sig(2.0)])
    assert scores.argmax(axis=1).tolist() == [0, 2, 0]


def test_hand_built_outputs_of_a_non_square_image():
    prompt_classes = [0, 0, 1]
    output = Owlv2Output(
        logits=np.array(
            [
                [-9.0, 4.0, -9.0],  # class 0 via its second prompt
                [-9.0, -9.0, 4.0],  # class 1
                [4.0, -9.0, -9.0],  # class 0, box entirely in the bottom padding: dropped
                [-9.0, -9.0, -1.0],  # class 1 at 0.27: under the 0.3 threshold
                [-9.0, -9.0, 0.0],  # class 1 at 0.5: class 1's own threshold is 0.4
            ]
        ),
        boxes=np.array(
            [
                [0.25, 0.25, 0.1, 0.1],
                [0.75, 0.125, 0.1, 0.05],
                [0.5, 0.8, 0.1, 0.1],
                [0.5, 0.2, 0.1, 0.1],
                [0.5, 0.3, 0.1, 0.1],
            ]
        ),
    )
    det = detections_from_output(
        output,
        prompt_classes,
        FinalizeOptions(thresholds=(0.3, 0.4), max_det=10),
        size=(120, 240),
        num_classes=2,
    )
    assert det.class_id.tolist() == [0, 1, 1]
    np.testing.assert_allclose(
        det.xyxy, [[48, 48, 72, 72], [168, 24, 192, 36], [108, 60, 132, 84]], atol=1e-4
    )
    np.testing.assert_allclose(det.confidence, [1 / (1 + np.exp(-4.0))] * 2 + [0.5], rtol=1e-6)


def test_max_det_keeps_the_best():
    logits = np.array([[0.0], [2.0], [1.0], [3.0]])
    boxes = np.tile([0.5, 0.5, 0.2, 0.2], (4, 1))
    det = detections_from_output(
        Owlv2Output(logits=logits, boxes=boxes),
        [0],
        FinalizeOptions(thresholds=(0.0,), max_det=2),
        size=(50, 50),
        num_classes=1,
    )
    np.testing.assert_allclose(det.confidence, 1 / (1 + np.exp(-np.array([3.0, 2.0]))), rtol=1e-6)


# ---------------------------------------------------------------- the tiny real model

FASTENERS = Ontology.from_dict(
    {
        "classes": [
            {"name": "bolt", "prompts": ["hex bolt", "bolt"]},
            {"name": "nut", "prompts": ["hex nut"]},
            {"name": "washer", "prompts": ["flat washer", "lock washer"]},
        ]
    }
)


def images(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def proposer(model_dir, onto=FASTENERS, **overrides):
    settings = {
        "model": "owlv2",
        "model_path": str(model_dir),
        "device": "cpu",
        "box_threshold": 0.0,
        "max_det": 100,
        "runtime": "torch",  # the accelerated runtimes have their own tests
    }
    return build_proposer(ProposerSettings(**{**settings, **overrides}), onto)


@pytest.fixture(scope="module")
def default_proposer(tiny_owlv2_dir):
    return proposer(tiny_owlv2_dir)


def test_output_structure(default_proposer, tiny_owlv2_dir):
    shapes = [(48, 96), (100, 60)]
    out = default_proposer.predict(images(*shapes))
    assert default_proposer.model_version == f"owlv2:{tiny_owlv2_dir.name}"
    assert len(out) == 2
    for det, (height, width) in zip(out, shapes):
        assert len(det) > 0
        assert det.confidence is not None and ((det.confidence > 0) & (det.confidence < 1)).all()
        assert set(det.class_id.tolist()) <= {0, 1, 2}
        assert (det.xyxy[:, [0, 2]] >= 0).all() and (det.xyxy[:, [0, 2]] <= width).all()
        assert (det.xyxy[:, [1, 3]] >= 0).all() and (det.xyxy[:, [1, 3]] <= height).all()
        assert (det.xyxy[:, 2] > det.xyxy[:, 0]).all() and (det.xyxy[:, 3] > det.xyxy[:, 1]).all()


def test_padding_region_yields_no_boxes(default_proposer):
    """A 1:2 image fills half of the 8x8 patch grid: the tiny model's 64 patch boxes (one per patch,
    near its cell) that sit in the padding are clipped away; the rest stay inside the image."""
    [det] = default_proposer.predict(images((32, 64)))
    assert 0 < len(det) <= 40
    assert det.xyxy[:, 3].max() <= 32


@pytest.mark.parametrize(("box_threshold", "max_det", "expected"), [(0.0, 7, 7), (0.0, 2, 2), (1.0, 100, 0)])
def test_threshold_and_max_det(tiny_owlv2_dir, box_threshold, max_det, expected):
    p = proposer(tiny_owlv2_dir, box_threshold=box_threshold, max_det=max_det)
    for det in p.predict(images((64, 96), (96, 64))):
        assert len(det) == expected


def test_per_class_thresholds(default_proposer, tiny_owlv2_dir):
    baseline = default_proposer.predict(images((80, 80)))[0]
    present = sorted(set(baseline.class_id.tolist()))
    assert len(present) >= 2
    blocked = present[0]
    classes = FASTENERS.to_dict()["classes"]
    classes[blocked]["box_threshold"] = 1.0
    det = proposer(tiny_owlv2_dir, onto=Ontology.from_dict({"classes": classes})).predict(images((80, 80)))[0]
    assert blocked not in det.class_id.tolist()
    kept = baseline[baseline.class_id != blocked]
    np.testing.assert_allclose(np.sort(det.confidence), np.sort(kept.confidence), atol=1e-6)


def test_batch_matches_single_images(default_proposer):
    batch = images((64, 96), (120, 80), (50, 50), seed=2)
    together = default_proposer.predict(batch)
    for image, det in zip(batch, together):
        [alone] = default_proposer.predict([image])
        assert det.class_id.tolist() == alone.class_id.tolist()
        np.testing.assert_allclose(det.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_allclose(det.confidence, alone.confidence, atol=1e-5)


def test_max_side_changes_the_input_resolution(tiny_owlv2_dir):
    p = proposer(tiny_owlv2_dir, max_side=96)
    assert tuple(p.preprocess(images((40, 80)))[0].shape[-2:]) == (96, 96)
    [det] = p.predict(images((40, 80)))
    assert len(det) > 0 and det.xyxy[:, 3].max() <= 40


def test_missing_model_path_is_one_line(tmp_path):
    with pytest.raises(AutolabelError, match="does not exist"):
        proposer(tmp_path / "missing")


def test_wrong_architecture_is_one_line(tiny_grounding_dino_dir):
    with pytest.raises(AutolabelError, match="not owlv2"):
        proposer(tiny_grounding_dino_dir)
