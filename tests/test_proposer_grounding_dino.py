"""Grounding DINO: the token -> class mapping (pure, hand-built logits) and the real tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import AutolabelError
from autolabel.ontology import Ontology
from autolabel.proposers import build_proposer
from autolabel.proposers.base import FinalizeOptions, ProposerSettings
from autolabel.proposers.grounding_dino import (
    Caption,
    ChunkOutput,
    build_captions,
    caption_text,
    detections_from_outputs,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HIGH, LOW = 8.0, -8.0  # logits: sigmoid 0.9997 / 0.0003


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    from tests.tiny_models import bert_vocab

    vocab_file = tmp_path_factory.mktemp("bert-vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(bert_vocab()) + "\n")
    return BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)


def ontology(*classes) -> Ontology:
    return Ontology.from_dict({"classes": [{"name": c[0], "prompts": list(c[1:])} for c in classes]})


def tokens_and_classes(caption: Caption, tokenizer) -> list[tuple[str, int]]:
    ids = tokenizer(caption.text)["input_ids"]
    return list(zip(tokenizer.convert_ids_to_tokens(ids), caption.token_classes.tolist()))


@pytest.mark.parametrize(
    ("prompts", "text", "spans"),
    [
        (["bolt"], "bolt .", [(0, 4)]),
        (["Hex Bolt", "nut"], "hex bolt . nut .", [(0, 8), (11, 14)]),
        (["  flat   washer ", "m6. bolt"], "flat washer . m6 bolt .", [(0, 11), (14, 21)]),
    ],
)
def test_caption_text(prompts, text, spans):
    assert caption_text(prompts) == (text, spans)


# fmt: off
CASES = {
    "many classes": (
        ontology(["bolt", "bolt"], ["nut", "nut"], ["washer", "washer"], ["screw", "screw"], ["ring", "ring"]),
        [("bolt", 0), (".", -1), ("nut", 1), (".", -1), ("washer", 2), (".", -1), ("screw", 3), (".", -1),
         ("ring", 4), (".", -1)],
    ),
    "multi-word prompts": (
        ontology(["screw", "phillips machine screw"], ["washer", "flat metal washer"]),
        [("phillips", 0), ("machine", 0), ("screw", 0), (".", -1), ("flat", 1), ("metal", 1), ("washer", 1),
         (".", -1)],
    ),
    "shared words": (
        ontology(["nut", "hex nut"], ["bolt", "hex bolt"]),
        [("hex", 0), ("nut", 0), (".", -1), ("hex", 1), ("bolt", 1), (".", -1)],
    ),
    "several prompts per class": (
        ontology(["bolt", "hex bolt", "threaded bolt", "bolt"], ["washer", "lock washer", "ring"]),
        [("hex", 0), ("bolt", 0), (".", -1), ("threaded", 0), ("bolt", 0), (".", -1), ("bolt", 0), (".", -1),
         ("lock", 1), ("washer", 1), (".", -1), ("ring", 1), (".", -1)],
    ),
    "unknown word": (
        ontology(["bolt", "zorbolt bolt"]),
        [("[UNK]", 0), ("bolt", 0), (".", -1)],
    ),
}
# fmt: on


@pytest.mark.parametrize("case", CASES)
def test_every_token_maps_to_its_prompts_class(tokenizer, case):
    onto, expected = CASES[case]
    [caption] = build_captions(onto.prompt_table(), tokenizer, 256)
    assert tokens_and_classes(caption, tokenizer) == [("[CLS]", -1), *expected, ("[SEP]", -1)]


def one_hot_logits(num_tokens: int, hot: list[list[int]], value: float = HIGH) -> np.ndarray:
    """One query per entry of ``hot``: ``value`` at those token positions, LOW elsewhere."""
    logits = np.full((len(hot), num_tokens), LOW)
    for query, positions in enumerate(hot):
        logits[query, positions] = value
    return logits


def test_hand_built_logits_map_to_classes_not_phrases(tokenizer):
    """'hex' alone decodes to a phrase matching no prompt (and two classes): positions decide."""
    onto = ontology(["nut", "hex nut"], ["bolt", "hex bolt", "bolt"], ["washer", "flat washer"])
    [caption] = build_captions(onto.prompt_table(), tokenizer, 256)
    # [CLS] hex nut . hex bolt . bolt . flat washer . [SEP]
    #   0    1   2  3  4   5   6   7   8   9    10   11  12
    hot = [[2], [4], [1, 2], [7], [9], [], [10, 5]]
    logits = one_hot_logits(len(caption.token_classes), hot)
    logits[6, 5] = 2.0  # 'bolt' of class 1 at 0.88, 'washer' of class 2 at 0.9997: class 2 wins
    boxes = np.tile([0.5, 0.5, 0.2, 0.4], (len(hot), 1))
    det = detections_from_outputs(
        [ChunkOutput(logits=logits, boxes=boxes)],
        [caption],
        FinalizeOptions(thresholds=(0.5, 0.5, 0.5), max_det=100),
        size=(100, 200),
        num_classes=3,
        text_threshold=0.25,
    )
    assert det.class_id.tolist() == [0, 1, 0, 1, 2, 2]  # query 5 (nothing hot) is dropped
    np.testing.assert_allclose(det.confidence, 1 / (1 + np.exp(-HIGH)), rtol=1e-6)
    np.testing.assert_allclose(det.xyxy, np.tile([80, 30, 120, 70], (6, 1)), atol=1e-4)


@pytest.mark.parametrize(
    ("score", "thresholds", "text_threshold", "kept"),
    [
        (0.5, [0.5, 0.9], 0.25, True),  # a score equal to its class's threshold is kept
        (0.5, [0.51, 0.1], 0.25, False),  # class 0's own threshold, not class 1's
        (0.7, [0.6, 0.9], 0.25, True),
        (0.7, [0.1, 0.1], 0.75, False),  # the text threshold is above the score
        (0.7, [0.1, 0.1], 0.7, True),
    ],
)
def test_box_and_text_thresholds(tokenizer, score, thresholds, text_threshold, kept):
    onto = ontology(["bolt", "bolt"], ["nut", "nut"])
    [caption] = build_captions(onto.prompt_table(), tokenizer, 256)
    logits = one_hot_logits(len(caption.token_classes), [[1]], value=float(np.log(score / (1 - score))))
    det = detections_from_outputs(
        [ChunkOutput(logits=logits, boxes=np.array([[0.5, 0.5, 0.5, 0.5]]))],
        [caption],
        FinalizeOptions(thresholds=tuple(thresholds), max_det=10),
        size=(64, 64),
        num_classes=2,
        text_threshold=text_threshold,
    )
    assert len(det) == int(kept)
    if kept:
        assert det.class_id.tolist() == [0]
        np.testing.assert_allclose(det.confidence, [score], rtol=1e-5)


def test_long_ontology_is_split_into_captions_of_whole_prompts(tokenizer):
    onto = ontology(
        ["bolt", "hex bolt", "threaded bolt"],
        ["nut", "hex nut", "wing nut"],
        ["washer", "flat washer"],
        ["screw", "phillips machine screw"],
    )
    captions = build_captions(onto.prompt_table(), tokenizer, max_tokens=9)
    assert len(captions) > 1
    seen_prompts = []
    for caption in captions:
        assert len(caption.token_classes) <= 9
        assert caption.text.endswith(" .")
        seen_prompts += caption.text[:-2].split(" . ")
        for token, class_index in tokens_and_classes(caption, tokenizer):
            if token not in ("[CLS]", "[SEP]", "."):
                prompt_class = [c for p, c in onto.prompt_table() if token in p.split()]
                assert class_index in prompt_class
    assert seen_prompts == [p for p, _ in onto.prompt_table()]


def test_detections_of_several_captions_are_merged(tokenizer):
    onto = ontology(["bolt", "hex bolt"], ["nut", "hex nut"], ["washer", "lock washer"])
    captions = build_captions(onto.prompt_table(), tokenizer, max_tokens=6)
    assert [c.text for c in captions] == ["hex bolt .", "hex nut .", "lock washer ."]
    chunks = [
        ChunkOutput(logits=one_hot_logits(5, [[1], []]), boxes=np.array([[0.25, 0.25, 0.1, 0.1]] * 2)),
        ChunkOutput(logits=one_hot_logits(5, [[], [2]]), boxes=np.array([[0.5, 0.5, 0.1, 0.1]] * 2)),
        ChunkOutput(logits=one_hot_logits(5, [[2], [2]]), boxes=np.array([[0.75, 0.75, 0.1, 0.1]] * 2)),
    ]
    det = detections_from_outputs(
        chunks,
        captions,
        FinalizeOptions(thresholds=(0.3,) * 3, max_det=10),
        size=(100, 100),
        num_classes=3,
        text_threshold=0.3,
    )
    assert det.class_id.tolist() == [0, 1, 2, 2]
    np.testing.assert_allclose(det.xyxy[:, 0], [20, 45, 70, 70], atol=1e-4)


def test_prompt_longer_than_the_text_encoder_is_one_line(tokenizer):
    onto = ontology(["bolt", "hex bolt with a flat metal washer and a lock ring"])
    with pytest.raises(AutolabelError, match="longer than the text encoder"):
        build_captions(onto.prompt_table(), tokenizer, max_tokens=8)


# ---------------------------------------------------------------- the tiny real model

FASTENERS = ontology(
    ["bolt", "hex bolt", "bolt"], ["nut", "hex nut"], ["washer", "flat washer", "lock washer"]
)


def images(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def proposer(model_dir, onto=FASTENERS, **overrides):
    settings = {
        "model": "grounding-dino",
        "model_path": str(model_dir),
        "device": "cpu",
        "box_threshold": 0.0,
        "text_threshold": 0.0,
        "max_det": 100,
        "runtime": "torch",  # the accelerated runtimes have their own tests
    }
    return build_proposer(ProposerSettings(**{**settings, **overrides}), onto)


@pytest.fixture(scope="module")
def default_proposer(tiny_grounding_dino_dir):
    return proposer(tiny_grounding_dino_dir)


def test_output_structure(default_proposer, tiny_grounding_dino_dir):
    shapes = [(64, 96), (120, 80)]
    out = default_proposer.predict(images(*shapes))
    assert default_proposer.model_version == f"grounding-dino:{tiny_grounding_dino_dir.name}"
    assert len(out) == 2
    for det, (height, width) in zip(out, shapes):
        assert len(det) > 0
        assert det.confidence is not None and det.confidence.dtype == np.float32
        assert ((det.confidence >= 0) & (det.confidence <= 1)).all()
        assert set(det.class_id.tolist()) <= {0, 1, 2}
        assert (det.xyxy[:, [0, 2]] >= 0).all() and (det.xyxy[:, [0, 2]] <= width).all()
        assert (det.xyxy[:, [1, 3]] >= 0).all() and (det.xyxy[:, [1, 3]] <= height).all()
        assert (det.xyxy[:, 2] > det.xyxy[:, 0]).all() and (det.xyxy[:, 3] > det.xyxy[:, 1]).all()


@pytest.mark.parametrize(("box_threshold", "max_det", "expected"), [(0.0, 7, 7), (0.0, 3, 3), (1.0, 100, 0)])
def test_threshold_and_max_det(tiny_grounding_dino_dir, box_threshold, max_det, expected):
    p = proposer(tiny_grounding_dino_dir, box_threshold=box_threshold, max_det=max_det)
    for det in p.predict(images((64, 96), (96, 64))):
        assert len(det) == expected


def test_per_class_thresholds(default_proposer, tiny_grounding_dino_dir):
    baseline = default_proposer.predict(images((96, 96)))[0]
    present = sorted(set(baseline.class_id.tolist()))
    assert len(present) >= 2
    blocked = present[0]
    classes = FASTENERS.to_dict()["classes"]
    classes[blocked]["box_threshold"] = 1.0
    p = proposer(tiny_grounding_dino_dir, onto=Ontology.from_dict({"classes": classes}))
    det = p.predict(images((96, 96)))[0]
    assert blocked not in det.class_id.tolist()
    kept = baseline[baseline.class_id != blocked]
    np.testing.assert_allclose(np.sort(det.confidence), np.sort(kept.confidence), atol=1e-5)


def test_batch_of_different_sizes_matches_single_images(default_proposer):
    batch = images((64, 96), (120, 80), (64, 96), seed=3)
    together = default_proposer.predict(batch)
    for image, det in zip(batch, together):
        [alone] = default_proposer.predict([image])
        assert det.class_id.tolist() == alone.class_id.tolist()
        np.testing.assert_allclose(det.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_allclose(det.confidence, alone.confidence, atol=1e-4)


def smooth_image(height: int, width: int) -> np.ndarray:
    """Low-frequency content, so that resizing it to the model's input barely changes the pixels."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(3 * x + 1), np.cos(4 * y), np.sin(2 * x + 3 * y)]
    return ((np.stack(channels, axis=-1) + 1) * 127.5).astype(np.uint8)


def test_boxes_scale_with_the_image(default_proposer):
    """The same picture at 1x and 3x: both resize to the same model input, boxes scale by 3."""
    small, large = smooth_image(96, 144), smooth_image(288, 432)
    det_small, det_large = default_proposer.predict([small])[0], default_proposer.predict([large])[0]
    matched = 0
    for box, class_id in zip(det_small.xyxy, det_small.class_id):
        distance = np.abs(det_large.xyxy / 3 - box).max(axis=1)
        matched += bool(((distance < 1.0) & (det_large.class_id == class_id)).any())
    # A random model is sensitive to the resize filter's small differences: most boxes, not all.
    assert matched >= 0.5 * len(det_small) > 0


def test_long_ontology_runs_one_forward_per_caption(tmp_path):
    from tests.tiny_models import build_tiny_grounding_dino

    model_dir = build_tiny_grounding_dino(tmp_path / "short-text", max_text_len=8)
    onto = ontology(["bolt", "hex bolt"], ["nut", "hex nut"], ["washer", "lock washer"], ["screw", "screw"])
    p = proposer(model_dir, onto=onto, max_det=200)
    assert [c.text for c in p.captions] == ["hex bolt . hex nut .", "lock washer . screw ."]
    [det] = p.predict(images((64, 64)))
    assert set(det.class_id.tolist()) == {0, 1, 2, 3}
    assert len(det) <= 30 * len(p.captions)


@pytest.mark.parametrize(("max_side", "shape"), [(None, (96, 144)), (80, (53, 80)), (128, (85, 128))])
def test_max_side_limits_the_model_input(tiny_grounding_dino_dir, max_side, shape):
    p = proposer(tiny_grounding_dino_dir, max_side=max_side)
    inputs = p.preprocess(images((200, 300)))
    [(indices, pixel_values, pixel_mask)] = inputs.groups
    assert indices == [0] and tuple(pixel_values.shape[-2:]) == shape and pixel_mask is None
    [det] = p.predict(images((200, 300)))
    assert len(det) > 0 and det.xyxy[:, 2].max() <= 300 and det.xyxy[:, 3].max() <= 200


def test_missing_model_path_is_one_line(tmp_path):
    with pytest.raises(AutolabelError, match="does not exist"):
        proposer(tmp_path / "missing")


def test_wrong_architecture_is_one_line(tiny_owlv2_dir):
    with pytest.raises(AutolabelError, match="not grounding-dino"):
        proposer(tiny_owlv2_dir)
