"""`autolabel propose` end to end through the CLI with tiny real models (random weights, real forwards)."""

import json
import sqlite3

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from autolabel.cli.app import app
from tests.builders import bad_corpus, rgb

runner = CliRunner()


@pytest.fixture
def workspace(tmp_path):
    for i in range(5):
        rgb(tmp_path / "raw" / "session1" / f"{i}.jpg", width=96 + 8 * i, height=64, seed=i)
    bad_corpus(tmp_path / "raw" / "odd")
    result = runner.invoke(app, ["init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path


def _predictions(ws):
    conn = sqlite3.connect(ws / ".autolabel" / "state.db")
    rows = conn.execute(
        "SELECT i.path, i.width, i.height, p.model_version, p.detections FROM predictions p"
        " JOIN images i ON i.id = p.image_id WHERE p.error IS NULL"
    ).fetchall()
    names = [r[0] for r in conn.execute("SELECT name FROM classes ORDER BY id")]
    return rows, names


@pytest.mark.parametrize(
    "backend, fixture", [("grounding-dino", "tiny_grounding_dino_dir"), ("owlv2", "tiny_owlv2_dir")]
)
def test_propose_end_to_end_and_resume(workspace, backend, fixture, request):
    model_dir = request.getfixturevalue(fixture)
    args = [
        "propose",
        "-w",
        str(workspace),
        "--prompts",
        "prompts/fasteners.yaml",
        "--model",
        backend,
        "--model-path",
        str(model_dir),
        "--box-threshold",
        "0.0",
        "--text-threshold",
        "0.0",
        "--max-det",
        "7",
        "--batch-size",
        "3",
        "--runtime",
        "torch",  # runtime auto has its own tests
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    good = (
        5 + 5
    )  # five RGB frames + the decodable files of the bad corpus (good, cmyk, 16-bit, gray, rotated)
    assert f"proposed {good} images" in result.output
    assert "Traceback" not in result.output
    rows, names = _predictions(workspace)
    assert names == ["bolt", "nut", "washer", "screw"]
    assert len(rows) == good
    for path, width, height, version, det_json in rows:
        det = json.loads(det_json)
        assert 0 < len(det["xyxy"]) <= 7, path  # threshold 0 keeps up to max_det boxes
        for (x1, y1, x2, y2), cls, score in zip(det["xyxy"], det["class_id"], det["confidence"]):
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert 0 <= cls < 4 and 0.0 <= score <= 1.0
        assert version.startswith(backend)
    preview = workspace / "previews" / "propose.png"
    assert preview.exists() and Image.open(preview).size[0] > 0

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "proposed 0 images" in again.output and f"{good} already done" in again.output

    # a threshold no box can reach: a different model key, so everything is proposed again, empty
    strict = runner.invoke(app, args[:-6] + ["--box-threshold", "1.0", "--batch-size", "3"])
    assert strict.exit_code == 0, strict.output
    assert f"proposed {good} images" in strict.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", " "], "empty prompt"),
        (["--prompt", "bolt", "--model", "nope"], "unknown model 'nope'"),
        (["--prompt", "bolt", "--model-path", "/does/not/exist"], "/does/not/exist"),
        ([], "no prompts"),
    ],
)
def test_bad_propose_input_is_one_line(workspace, extra, message):
    result = runner.invoke(app, ["propose", "-w", str(workspace), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.count("error:") == 1


def test_missing_weights_offline_names_the_model(workspace, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["propose", "-w", str(workspace), "--prompt", "bolt", "--model", "owlv2"])
    assert result.exit_code == 2
    assert "google/owlv2-base-patch16-ensemble" in result.output
    assert "--model-path" in result.output


def test_propose_owlv2_runtime_onnx_matches_torch(tmp_path, tiny_owlv2_dir, monkeypatch):
    """`--runtime onnx` stores the detections `--runtime torch` stores (boxes within 1e-3 px, scores
    within 1e-5), exports once and reuses the export on the next run."""
    monkeypatch.setenv("AUTOLABEL_EXPORT_CACHE", str(tmp_path / "exports"))
    stored = {}
    for runtime in ("torch", "onnx", "onnx"):
        ws = tmp_path / f"ws-{len(stored)}"
        for i in range(3):
            rgb(ws / "raw" / f"{i}.jpg", width=96 + 8 * i, height=64, seed=i)
        assert runner.invoke(app, ["init", "--images", str(ws / "raw"), "-w", str(ws)]).exit_code == 0
        args = ["propose", "-w", str(ws), "--prompt", "bolt", "--prompt", "nut", "--model", "owlv2"]
        args += ["--model-path", str(tiny_owlv2_dir), "--box-threshold", "0.0", "--runtime", runtime]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "runtime onnx not used" not in result.output
        rows, _ = _predictions(ws)
        stored[len(stored)] = {path: json.loads(det) for path, _, _, _, det in rows}
    assert len([p for p in (tmp_path / "exports").iterdir() if p.is_dir()]) == 1  # one export
    for other in (1, 2):
        assert stored[other].keys() == stored[0].keys()
        for path, det in stored[0].items():
            got = stored[other][path]
            assert got["class_id"] == det["class_id"]
            np.testing.assert_allclose(got["xyxy"], det["xyxy"], atol=1e-3)
            np.testing.assert_allclose(got["confidence"], det["confidence"], atol=1e-5)


def test_propose_unknown_runtime_is_one_line(workspace, tiny_owlv2_dir):
    args = ["propose", "-w", str(workspace), "--prompt", "bolt", "--model", "owlv2"]
    result = runner.invoke(app, [*args, "--model-path", str(tiny_owlv2_dir), "--runtime", "tensorrt"])
    assert result.exit_code != 0
    assert "unknown runtime 'tensorrt': choose one of auto, torch, onnx, openvino" in result.output
    assert "Traceback" not in result.output


def test_propose_runtime_auto_is_the_default_and_is_recorded_with_the_run(
    tmp_path, tiny_owlv2_dir, monkeypatch
):
    """No --runtime: auto chooses once (one line), the choice is saved with the run's proposer record,
    and a second workspace reuses the recorded choice."""
    monkeypatch.setenv("AUTOLABEL_EXPORT_CACHE", str(tmp_path / "exports"))
    records = []
    for run in range(2):
        ws = tmp_path / f"ws-{run}"
        rgb(ws / "raw" / "0.jpg", width=96, height=64, seed=0)
        assert runner.invoke(app, ["init", "--images", str(ws / "raw"), "-w", str(ws)]).exit_code == 0
        args = ["propose", "-w", str(ws), "--prompt", "bolt", "--model", "owlv2", "--preview", "0"]
        result = runner.invoke(app, [*args, "--model-path", str(tiny_owlv2_dir), "--box-threshold", "0.0"])
        assert result.exit_code == 0, result.output
        [line] = [line for line in result.output.splitlines() if "runtime auto ->" in line]
        conn = sqlite3.connect(ws / ".autolabel" / "state.db")
        [(raw,)] = conn.execute("SELECT value FROM meta WHERE key = 'last_proposer'").fetchall()
        records.append(json.loads(raw))
        assert records[-1]["runtime_reason"] == line and line.startswith(
            f"owlv2: runtime auto -> {records[-1]['runtime']} ("
        )
    assert records[0]["runtime"] == records[1]["runtime"] in ("torch", "onnx", "openvino")
    assert "fastest passing parity here" in records[0]["runtime_reason"]
    assert "(recorded in " in records[1]["runtime_reason"]
