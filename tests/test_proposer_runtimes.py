"""OWLv2's image side in ONNX Runtime / OpenVINO and ``runtime: auto``: exported once, cached,
parity-checked, reused; rebuilt when stale or corrupt; a runtime that cannot be used falls back with
one line.

Tolerances: boxes within 1e-3 px and scores within 1e-5 of PyTorch on the tiny model
(``XYXY_ATOL`` / ``SCORE_ATOL``; the export-time parity check itself uses ``owlv2.PARITY_*``).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from autolabel.proposers import owlv2, runtime_graphs, runtime_select
from tests import test_proposer_owlv2 as owl
from tests.test_proposer_text_once import BATCHES, assert_same_detections
from tests.tiny_models import build_tiny_owlv2

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("torch_one_thread")
RUNTIMES = ["onnx", pytest.param("openvino", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("openvino"), reason="openvino not installed"))]  # fmt: skip


@pytest.fixture
def export_cache(tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    monkeypatch.setenv("AUTOLABEL_EXPORT_CACHE", str(folder))
    return folder


@pytest.fixture
def weights(tmp_path, tiny_owlv2_dir):
    """A private copy of the tiny model (tests below overwrite it)."""
    return shutil.copytree(tiny_owlv2_dir, tmp_path / "owlv2-weights")


@pytest.fixture
def spy(monkeypatch):
    """Counts the real exports and timings (they still run)."""
    calls = {"export": 0, "timing": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(runtime_graphs, "export", counted("export", runtime_graphs.export))
    monkeypatch.setattr(runtime_select, "best_seconds", counted("timing", runtime_select.best_seconds))
    return calls


def predictions(p):
    return [p.predict(owl.images(*shapes, seed=i)) for i, shapes in enumerate(BATCHES)]


def runtime_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if ": runtime " in line]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_gives_the_torch_detections_and_is_reused(weights, export_cache, spy, capsys, runtime):
    torch_p = owl.proposer(weights)
    first = owl.proposer(weights, runtime=runtime)
    assert first.session is not None and first.runtime.built and first.runtime.reason is None
    assert first.selection.used == runtime and spy["export"] == 1
    assert first.runtime.parity["max_boxes_diff"] <= owlv2.PARITY_BOX_ATOL
    assert first.runtime.path.parent == export_cache
    for got_batch, expected_batch in zip(predictions(first), predictions(torch_p)):
        for got, expected in zip(got_batch, expected_batch):
            assert len(got) > 0
            assert_same_detections(got, expected)

    second = owl.proposer(weights, runtime=runtime)
    assert second.session is not None and not second.runtime.built  # the cached export
    assert spy["export"] == 1 and second.runtime.path == first.runtime.path
    for got_batch, expected_batch in zip(predictions(second), predictions(torch_p)):
        for got, expected in zip(got_batch, expected_batch):
            assert_same_detections(got, expected)
    assert runtime_lines(capsys) == []  # nothing to say when the asked runtime runs


def test_openvino_computes_in_f32_and_records_it(weights, export_cache):
    pytest.importorskip("openvino")
    p = owl.proposer(weights, runtime="openvino")
    assert p.runtime.parity["inference_precision"] == "f32"
    assert p.session.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    meta = json.loads((p.runtime.path / "meta.json").read_text())
    assert meta["parity"]["cpu_default_precision"]  # what the CPU plugin would have used
    assert set(meta["files"]) == {"model.xml", "model.bin"}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_changed_weights_rebuild_the_export(weights, export_cache, runtime):
    first = owl.proposer(weights, runtime=runtime)
    assert first.runtime.built
    build_tiny_owlv2(weights, seed=1)  # same folder, new weights: the cached export is stale
    second = owl.proposer(weights, runtime=runtime)
    assert second.runtime.built and second.session is not None
    assert second.runtime.path == first.runtime.path
    [got] = second.predict(owl.images((64, 96)))
    [expected] = owl.proposer(weights).predict(owl.images((64, 96)))
    assert_same_detections(got, expected)
    [old] = first.predict(owl.images((64, 96)))
    assert not np.allclose(old.confidence[:5], got.confidence[:5])  # really other weights


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_corrupt_export_is_rebuilt(weights, export_cache, runtime):
    first = owl.proposer(weights, runtime=runtime)
    model_file = first.runtime.path / runtime_graphs.FILES[runtime][-1]
    model_file.write_bytes(model_file.read_bytes()[:1000])
    second = owl.proposer(weights, runtime=runtime)
    assert second.runtime.built and second.session is not None
    (second.runtime.path / "meta.json").write_text("{not json")
    third = owl.proposer(weights, runtime=runtime)
    assert third.runtime.built and third.session is not None
    batch = owl.images((64, 96))
    assert_same_detections(third.predict(batch)[0], owl.proposer(weights).predict(batch)[0])


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
    [line] = runtime_lines(capsys)
    assert line.startswith("owlv2: runtime onnx not used (parity failed") and line.endswith("; running torch")
    batch = owl.images((64, 96))
    assert_same_detections(p.predict(batch)[0], owl.proposer(weights).predict(batch)[0])
    again = owl.proposer(weights, runtime="onnx")  # the failure is remembered, not re-exported
    assert again.session is None and not again.runtime.built and again.runtime.reason == p.runtime.reason


def test_openvino_not_importable_falls_back_with_one_line(weights, export_cache, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    p = owl.proposer(weights, runtime="openvino")
    assert p.session is None and p.selection.used == "torch"
    [line] = runtime_lines(capsys)
    assert line.startswith("owlv2: runtime openvino not used (openvino is not importable")
    assert "pip install openvino" in line and line.endswith("; running torch")
    batch = owl.images((64, 96))
    assert_same_detections(p.predict(batch)[0], owl.proposer(weights).predict(batch)[0])


def test_auto_chooses_records_and_reuses_without_exporting_or_timing(weights, export_cache, spy, capsys):
    first = owl.proposer(weights, runtime="auto")
    exported, timed = spy["export"], spy["timing"]
    available = ["torch", "onnx"] + (
        ["openvino"] if "openvino" not in first.selection.choice["not_used"] else []
    )
    assert exported == len(available) - 1 and timed == len(available)
    [line] = runtime_lines(capsys)
    choice_file = next(export_cache.glob("owlv2-*-auto-64x64")) / "choice.json"
    record = json.loads(choice_file.read_text())
    assert record["chosen"] == first.selection.used in available
    assert record["chosen"] == min(record["seconds"], key=record["seconds"].get)
    assert sorted(record["seconds"]) == sorted(available) and record["device"] == "cpu"
    assert line.startswith(f"owlv2: runtime auto -> {record['chosen']} (fastest passing parity here: ")
    assert (first.session is None) == (record["chosen"] == "torch")

    second = owl.proposer(weights, runtime="auto")
    assert (spy["export"], spy["timing"]) == (exported, timed)  # nothing exported or timed again
    assert second.selection.used == record["chosen"]
    [line] = runtime_lines(capsys)
    assert line.startswith(f"owlv2: runtime auto -> {record['chosen']} (recorded in {choice_file}")
    for got, expected in zip(predictions(second)[0], predictions(owl.proposer(weights))[0]):
        assert_same_detections(got, expected)

    build_tiny_owlv2(weights, seed=1)  # other weights: chosen again
    owl.proposer(weights, runtime="auto")
    assert spy["timing"] == 2 * timed


def test_auto_without_openvino_records_why(weights, export_cache, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)
    p = owl.proposer(weights, runtime="auto")
    assert p.selection.used in ("torch", "onnx")
    assert p.selection.choice["not_used"]["openvino"].startswith("openvino is not importable")
    [line] = runtime_lines(capsys)
    assert "openvino not used: openvino is not importable" in line


def test_auto_off_the_cpu_means_torch():
    def never():
        raise AssertionError("nothing is exported off the CPU")

    selection = runtime_select.select_runtime(
        name="owlv2", asked="auto", device="cuda", cpu_fp32=False, make_spec=never, parity=never,
        run_torch=never, run_graph=never,
    )  # fmt: skip
    assert selection.used == "torch" and selection.graph is None
    assert (
        selection.note
        == "owlv2: runtime auto -> torch (the ONNX/OpenVINO exports run fp32 on the CPU, not on cuda)"
    )


def test_a_backend_without_the_runtime_says_so_in_one_line(tmp_path, capsys):
    from autolabel.errors import AutolabelError
    from autolabel.proposers import build_proposer
    from autolabel.proposers.base import ProposerSettings

    settings = ProposerSettings(model="yolo-world", model_path=str(tmp_path / "missing.pt"), runtime="onnx")
    with pytest.raises(AutolabelError):
        build_proposer(settings, owl.FASTENERS)
    assert runtime_lines(capsys) == ["yolo-world: runtime onnx is not available for it; running torch"]


def test_an_unknown_runtime_is_one_line(tiny_owlv2_dir):
    """As the CLI passes it: a flag override (``model_copy``) is not validated by pydantic."""
    from autolabel.errors import AutolabelError
    from autolabel.proposers import build_proposer
    from autolabel.proposers.base import ProposerSettings

    settings = ProposerSettings(model="owlv2", model_path=str(tiny_owlv2_dir), device="cpu")
    with pytest.raises(
        AutolabelError, match="unknown runtime 'tensorrt': choose one of auto, torch, onnx, openvino"
    ):
        build_proposer(settings.model_copy(update={"runtime": "tensorrt"}), owl.FASTENERS)
