"""Grounding DINO in ONNX Runtime / OpenVINO and ``runtime: auto``, on the tiny model.

The exports share one cache for the module (each costs a few seconds); the cache rules themselves
(stale weights, corrupt files, remembered failures) are shared code, tested on OWLv2 for both
runtimes in ``test_proposer_runtimes``. The PyTorch reference uses
the same fixed square input rule: it is the fallback a user gets when the runtime is unavailable
(``onnxruntime`` masked). Tolerances: boxes within 1e-3 px, scores within 1e-5
(``assert_same_detections``); the export-time check uses ``grounding_dino_export.PARITY_*``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests import test_proposer_grounding_dino as gd
from tests.test_proposer_text_once import BATCHES, assert_same_detections

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("torch_one_thread")
HAS_OPENVINO = __import__("importlib").util.find_spec("openvino") is not None
RUNTIMES = [
    "onnx",
    pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no openvino")),
]


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gd-exports")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOLABEL_EXPORT_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def square_torch(tiny_grounding_dino_dir, export_cache):
    """PyTorch with the square rule: what --runtime onnx falls back to without onnxruntime."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "onnxruntime", None)
        p = gd.proposer(tiny_grounding_dino_dir, runtime="onnx")
    assert p.runtime_used == "torch" and p.square == 96
    return p


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_gives_the_torch_detections_and_is_reused(tiny_grounding_dino_dir, square_torch, runtime):
    first = gd.proposer(tiny_grounding_dino_dir, runtime=runtime)
    [selection] = first.selections
    assert selection.used == runtime and selection.cached.reason is None
    assert (
        first.model_version
        == square_torch.model_version
        == f"grounding-dino:{tiny_grounding_dino_dir.name}@square96"
    )
    batch = gd.images(*BATCHES[0])
    for got, expected in zip(first.predict(batch), square_torch.predict(batch)):
        assert len(got) > 0
        assert_same_detections(got, expected)
    again = gd.proposer(tiny_grounding_dino_dir, runtime=runtime)
    assert not again.selections[0].cached.built and again.selections[0].cached.path == selection.cached.path
    [got] = again.predict(gd.images((64, 96)))
    assert_same_detections(got, square_torch.predict(gd.images((64, 96)))[0])


def test_the_square_rule_gives_boxes_in_original_pixels(square_torch):
    """The same picture at 1x and 2x resizes to the same padded input: boxes scale by 2."""
    small, large = gd.smooth_image(48, 80), gd.smooth_image(96, 160)
    inputs = square_torch.preprocess([small, large])
    [(indices, pixel_values, pixel_mask)] = inputs.groups
    assert indices == [0, 1] and tuple(pixel_values.shape) == (2, 3, 96, 96)
    assert pixel_mask.sum(dim=(1, 2)).tolist() == [58 * 96, 58 * 96]  # 96 x 57.6 -> 58 rows
    det_small, det_large = square_torch.predict([small, large])
    assert len(det_small) > 0 and det_large.xyxy[:, 3].max() <= 96
    matched = 0
    for box, class_id in zip(det_small.xyxy, det_small.class_id):
        distance = np.abs(det_large.xyxy / 2 - box).max(axis=1)
        matched += bool(((distance < 1.0) & (det_large.class_id == class_id)).any())
    assert matched >= 0.5 * len(det_small)


@pytest.mark.skipif(not HAS_OPENVINO, reason="no openvino")
def test_a_corrupt_openvino_export_is_rebuilt_from_the_cached_onnx(tiny_grounding_dino_dir, square_torch):
    first = gd.proposer(tiny_grounding_dino_dir, runtime="openvino")
    folder = first.selections[0].cached.path
    (folder / "model.xml").write_text("<not a model")
    second = gd.proposer(tiny_grounding_dino_dir, runtime="openvino")
    cached = second.selections[0].cached
    assert cached.built and second.selections[0].used == "openvino"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["converted_from"].endswith("-onnx-96x96/model.onnx")  # no second torch export
    [got] = second.predict(gd.images((64, 96)))
    assert_same_detections(got, square_torch.predict(gd.images((64, 96)))[0])


def test_auto_chooses_and_records_per_caption(tiny_grounding_dino_dir, square_torch, export_cache, capsys):
    p = gd.proposer(tiny_grounding_dino_dir, runtime="auto")
    [selection] = p.selections
    [record_file] = export_cache.glob("grounding-dino-*-auto-96x96/choice.json")
    record = json.loads(record_file.read_text())
    assert selection.used == record["chosen"] == min(record["seconds"], key=record["seconds"].get)
    assert set(record["seconds"]) == {"torch", "onnx", *(["openvino"] if HAS_OPENVINO else [])}
    lines = [line for line in capsys.readouterr().err.splitlines() if "runtime auto" in line]
    assert lines == [selection.note]
    [got] = p.predict(gd.images((64, 96)))
    assert_same_detections(got, square_torch.predict(gd.images((64, 96)))[0])


def test_torch_keeps_the_processors_resize(tiny_grounding_dino_dir):
    p = gd.proposer(tiny_grounding_dino_dir, runtime="torch")
    assert p.square is None and p.selections == [] and "@square" not in p.model_version
