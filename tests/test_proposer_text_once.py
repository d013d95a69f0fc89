"""The text side runs once per ontology (OWLv2) / once per caption (Grounding DINO), not per batch,
and gives the detections the uncached forward gives (tolerances in each test)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from autolabel.ontology import Ontology
from tests import test_proposer_grounding_dino as gd
from tests import test_proposer_owlv2 as owl

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BATCHES = [((64, 96), (120, 80)), ((50, 50),), ((96, 64), (40, 80), (70, 70))]
XYXY_ATOL = 1e-3  # pixels
SCORE_ATOL = 1e-5


@contextlib.contextmanager
def counting_calls(module_type):
    """Counts forward calls of every module of ``module_type`` (hooks on all modules, so it also
    sees models built inside the block)."""
    import torch

    calls = []

    def hook(module, args, output):
        if isinstance(module, module_type):
            calls.append(module)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def assert_same_detections(got, expected):
    assert got.class_id.tolist() == expected.class_id.tolist()
    np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=XYXY_ATOL)
    np.testing.assert_allclose(got.confidence, expected.confidence, atol=SCORE_ATOL)


def owlv2_uncached(p, images):
    """The full ``Owlv2ForObjectDetection.forward`` (text encoder per image) through the same postprocess."""
    import torch

    pixels = p.preprocess(images)
    batch = len(images)
    with torch.inference_mode():
        result = p.model(
            pixel_values=pixels,
            input_ids=p.text_inputs["input_ids"].repeat(batch, 1),
            attention_mask=p.text_inputs["attention_mask"].repeat(batch, 1),
            interpolate_pos_encoding=p.interpolate,
        )
    outputs = [
        owl.Owlv2Output(logits=result.logits[row].numpy(), boxes=result.pred_boxes[row].numpy())
        for row in range(batch)
    ]
    return p.postprocess(outputs, [im.shape[:2] for im in images])


def test_owlv2_encodes_the_prompts_once_per_ontology(tiny_owlv2_dir):
    from transformers.models.owlv2.modeling_owlv2 import Owlv2TextTransformer

    with counting_calls(Owlv2TextTransformer) as calls:
        p = owl.proposer(tiny_owlv2_dir)
        results = [p.predict(owl.images(*shapes, seed=i)) for i, shapes in enumerate(BATCHES)]
        assert len(calls) == 1
        other = owl.proposer(tiny_owlv2_dir, onto=Ontology.from_prompts(["bolt", "nut"]))
        other.predict(owl.images((64, 64)))
        assert len(calls) == 2  # a second ontology: its own single pass
    for i, (shapes, dets) in enumerate(zip(BATCHES, results)):
        for got, expected in zip(dets, owlv2_uncached(p, owl.images(*shapes, seed=i))):
            assert len(got) > 0
            assert_same_detections(got, expected)


def test_owlv2_text_once_with_max_side(tiny_owlv2_dir):
    p = owl.proposer(tiny_owlv2_dir, max_side=96)
    batch = owl.images((40, 80), (90, 45))
    for got, expected in zip(p.predict(batch), owlv2_uncached(p, batch)):
        assert_same_detections(got, expected)


def test_grounding_dino_encodes_each_caption_once(tiny_grounding_dino_dir):
    p = gd.proposer(tiny_grounding_dino_dir)
    backbone = p.text_backbone.backbone  # the real BERT under the caching wrapper
    with counting_calls(type(backbone)) as calls:
        results = [p.predict(gd.images(*shapes, seed=i)) for i, shapes in enumerate(BATCHES)]
    assert len(calls) == len(p.captions) == 1

    p.model.model.text_backbone = backbone  # the uncached path: BERT on every forward
    try:
        with counting_calls(type(backbone)) as calls:
            uncached = [p.predict(gd.images(*shapes, seed=i)) for i, shapes in enumerate(BATCHES)]
        assert len(calls) > len(BATCHES)
    finally:
        p.model.model.text_backbone = p.text_backbone
    for dets, expected in zip(results, uncached):
        for got, want in zip(dets, expected):
            assert len(got) > 0
            assert_same_detections(got, want)


def test_grounding_dino_long_ontology_encodes_each_caption_once(tmp_path):
    from tests.tiny_models import build_tiny_grounding_dino

    short = build_tiny_grounding_dino(tmp_path / "short", max_text_len=12)
    p = gd.proposer(short)
    assert len(p.captions) >= 2
    backbone = p.text_backbone.backbone
    with counting_calls(type(backbone)) as calls:
        for i, shapes in enumerate(BATCHES):
            p.predict(gd.images(*shapes, seed=i))
    assert len(calls) == len(p.captions)
