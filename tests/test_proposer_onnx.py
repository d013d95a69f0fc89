"""``runtime: onnx`` for owlv2: the image side exported once, cached, parity-checked, reused.

Tolerances: boxes within 1e-3 px and scores within 1e-5 of PyTorch on the tiny model (the
export-time parity check itself uses ``owlv2.PARITY_*``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from autolabel.proposers import owlv2
from tests import test_proposer_owlv2 as owl
from tests.test_proposer_text_once import BATCHES, assert_same_detections
from tests.tiny_models import build_tiny_owlv2

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def export_cache(tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    monkeypatch.setenv("AUTOLABEL_EXPORT_CACHE", str(folder))
    return folder


@pytest.fixture
def weights(tmp_path, tiny_owlv2_dir):
    """A private copy of the tiny model (tests below overwrite it)."""
    return shutil.copytree(tiny_owlv2_dir, tmp_path / "owlv2-weights")


def predictions(p):
    return [p.predict(owl.images(*shapes, seed=i)) for i, shapes in enumerate(BATCHES)]


def test_onnx_gives_the_torch_detections_and_is_reused(weights, export_cache, capsys):
    torch_p = owl.proposer(weights)
    first = owl.proposer(weights, runtime="onnx")
    assert first.session is not None and first.runtime.built and first.runtime.reason is None
    assert first.runtime.parity["max_box_diff"] <= owlv2.PARITY_BOX_ATOL
    assert first.runtime.path.parent == export_cache
    for got_batch, expected_batch in zip(predictions(first), predictions(torch_p)):
        for got, expected in zip(got_batch, expected_batch):
            assert len(got) > 0
            assert_same_detections(got, expected)

    second = owl.proposer(weights, runtime="onnx")
    assert second.session is not None and not second.runtime.built  # the cached export
    assert second.runtime.path == first.runtime.path
    for got_batch, expected_batch in zip(predictions(second), predictions(torch_p)):
        for got, expected in zip(got_batch, expected_batch):
            assert_same_detections(got, expected)
    assert "runtime onnx not used" not in capsys.readouterr().err


def test_changed_weights_rebuild_the_export(weights, export_cache):
    first = owl.proposer(weights, runtime="onnx")
    assert first.runtime.built
    build_tiny_owlv2(weights, seed=1)  # same folder, new weights: the cached export is stale
    second = owl.proposer(weights, runtime="onnx")
    assert second.runtime.built and second.session is not None
    assert second.runtime.path == first.runtime.path
    [got] = second.predict(owl.images((64, 96)))
    [expected] = owl.proposer(weights).predict(owl.images((64, 96)))
    assert_same_detections(got, expected)
    [old] = first.predict(owl.images((64, 96)))
    assert not np.allclose(old.confidence[:5], got.confidence[:5])  # really other weights


def test_a_corrupt_export_is_rebuilt(weights, export_cache):
    first = owl.proposer(weights, runtime="onnx")
    model_file = first.runtime.path / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    second = owl.proposer(weights, runtime="onnx")
    assert second.runtime.built and second.session is not None
    (second.runtime.path / "meta.json").write_text("{not json")
    third = owl.proposer(weights, runtime="onnx")
    assert third.runtime.built and third.session is not None


def test_a_different_input_size_is_its_own_export(weights, export_cache):
    default = owl.proposer(weights, runtime="onnx")
    larger = owl.proposer(weights, runtime="onnx", max_side=96)
    assert larger.runtime.built and larger.runtime.path != default.runtime.path
    batch = owl.images((40, 80), (90, 45))
    for got, expected in zip(larger.predict(batch), owl.proposer(weights, max_side=96).predict(batch)):
        assert_same_detections(got, expected)


def test_failed_parity_falls_back_to_torch_with_one_line(weights, export_cache, monkeypatch, capsys):
    monkeypatch.setattr(owlv2, "PARITY_BOX_ATOL", -1.0)  # nothing can pass
    p = owl.proposer(weights, runtime="onnx")
    assert p.session is None and p.runtime.reason.startswith("parity failed")
    err = [line for line in capsys.readouterr().err.splitlines() if "runtime onnx" in line]
    assert len(err) == 1 and err[0].startswith("owlv2: runtime onnx not used (parity failed")
    assert err[0].endswith("; running torch")
    batch = owl.images((64, 96))
    assert_same_detections(p.predict(batch)[0], owl.proposer(weights).predict(batch)[0])
    again = owl.proposer(weights, runtime="onnx")  # the failure is remembered, not re-exported
    assert again.session is None and not again.runtime.built and again.runtime.reason == p.runtime.reason


def test_a_backend_without_the_runtime_falls_back_with_one_line(tiny_grounding_dino_dir, capsys):
    from tests import test_proposer_grounding_dino as gd

    p = gd.proposer(tiny_grounding_dino_dir, runtime="onnx")
    err = [line for line in capsys.readouterr().err.splitlines() if "runtime onnx" in line]
    assert err == ["grounding-dino: runtime onnx is not available for it; running torch"]
    assert p.settings.runtime == "torch"
    assert len(p.predict(gd.images((64, 96)))[0]) > 0


def test_an_unknown_runtime_is_one_line(tiny_owlv2_dir):
    """As the CLI passes it: a flag override (``model_copy``) is not validated by pydantic."""
    from autolabel.errors import AutolabelError
    from autolabel.proposers import build_proposer
    from autolabel.proposers.base import ProposerSettings

    settings = ProposerSettings(model="owlv2", model_path=str(tiny_owlv2_dir), device="cpu")
    with pytest.raises(AutolabelError, match="unknown runtime 'openvino': choose one of torch, onnx"):
        build_proposer(settings.model_copy(update={"runtime": "openvino"}), owl.FASTENERS)
