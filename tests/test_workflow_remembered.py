"""One workflow, remembered: propose's options reach loop/select, which reuse its pre-labels."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autolabel.cli.app import app
from tests.builders import rgb

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def workspace(tmp_path):
    for i in range(8):
        rgb(tmp_path / "raw" / f"s{i % 2}" / f"{i}.jpg", width=96, height=64, seed=i)
    result = runner.invoke(app, ["init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    return tmp_path / "ws"


def _propose(ws, model_dir, *extra):
    args = ["propose", "-w", str(ws), "--prompts", str(REPO / "prompts" / "fasteners.yaml")]
    args += ["--model", "grounding-dino", "--model-path", str(model_dir), "--box-threshold", "0.0"]
    args += ["--text-threshold", "0.0", "--max-det", "3", "--preview", "0", "--runtime", "torch", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_propose_then_select_reuses_the_stored_prelabels(workspace, tiny_grounding_dino_dir, monkeypatch):
    result = _propose(workspace, tiny_grounding_dino_dir)
    assert "saved the proposer settings and prompts to autolabel.yaml" in result.output
    config = yaml.safe_load((workspace / "autolabel.yaml").read_text())
    assert config["proposer"]["model_path"] == str(tiny_grounding_dino_dir)
    assert config["proposer"]["box_threshold"] == 0.0 and config["proposer"]["max_det"] == 3
    assert config["ontology"].endswith("fasteners.yaml")

    def built_again(*args, **kwargs):
        raise AssertionError("round 0 built the proposer again instead of reusing its pre-labels")

    monkeypatch.setattr("autolabel.proposers.build_proposer", built_again)
    args = ["select", "-w", str(workspace), "--recipe", str(REPO / "loop" / "default.yaml")]
    selected = runner.invoke(app, [*args, "--budget", "4", "--no-push"])
    assert selected.exit_code == 0, selected.output
    assert "reusing the pre-labels 'propose' stored for 4 images" in selected.output
    import sqlite3

    db = sqlite3.connect(workspace / ".autolabel" / "state.db")
    step = db.execute("SELECT result FROM loop_steps WHERE round = 0 AND step = 'prelabel'").fetchone()
    assert json.loads(step[0])["reused"] == 4
    assert db.execute("SELECT COUNT(DISTINCT model_key) FROM predictions").fetchone()[0] == 1


def test_other_settings_in_the_yaml_are_not_reused(workspace, tiny_grounding_dino_dir):
    from autolabel.engine import remembered_key
    from autolabel.ontology import Ontology
    from autolabel.workspace import Workspace

    _propose(workspace, tiny_grounding_dino_dir)
    ws = Workspace.load(workspace)
    ontology = Ontology.load(ws.ontology_path())
    with ws.open_store() as store:
        assert remembered_key(store, ws.config.proposer, ontology.fingerprint()) is not None
        changed = ws.config.proposer.model_copy(update={"box_threshold": 0.5})
        assert remembered_key(store, changed, ontology.fingerprint()) is None
        assert remembered_key(store, ws.config.proposer, "another-ontology") is None


def test_no_save_leaves_the_yaml_alone(workspace, tiny_grounding_dino_dir):
    before = (workspace / "autolabel.yaml").read_text()
    result = _propose(workspace, tiny_grounding_dino_dir, "--no-save")
    assert "saved the proposer" not in result.output
    assert (workspace / "autolabel.yaml").read_text() == before


def test_inline_prompts_are_saved_as_the_workspace_ontology(workspace, tiny_grounding_dino_dir):
    args = [
        "propose",
        "-w",
        str(workspace),
        "-p",
        "bolt",
        "-p",
        "nut",
        "--model-path",
        str(tiny_grounding_dino_dir),
    ]
    result = runner.invoke(app, [*args, "--preview", "0", "--runtime", "torch"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((workspace / "autolabel.yaml").read_text())
    assert config["ontology"] == "ontology.yaml"
    saved = yaml.safe_load((workspace / "ontology.yaml").read_text())
    assert [c["name"] for c in saved["classes"]] == ["bolt", "nut"]


def test_a_later_init_ontology_gives_the_workspace_its_classes(workspace, tmp_path):
    result = runner.invoke(
        app,
        [
            "init",
            "--images",
            str(tmp_path / "raw"),
            "-w",
            str(workspace),
            "--ontology",
            str(REPO / "prompts" / "fasteners.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((workspace / "autolabel.yaml").read_text())["ontology"].endswith("fasteners.yaml")


def test_loop_starts_the_local_label_studio_when_none_is_configured(workspace, monkeypatch):
    from autolabel.loop_steps import connect_once
    from autolabel.studio import server
    from autolabel.workspace import Workspace

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    started = []

    def fake_start(studio_dir, image_root, port, timeout=180.0):  # the server process is outside the unit
        started.append(port)
        return server.ServerStatus(True, True, f"http://127.0.0.1:{port}", 1, port)

    monkeypatch.setattr(server, "start", fake_start)
    monkeypatch.setattr("autolabel.studio.client.connect", lambda ws: "client")
    lines = []
    ws = Workspace.load(workspace)
    assert connect_once(ws, lines.append)() == "client"
    assert started == [8089] and len(lines) == 1 and "started the workspace's Label Studio" in lines[0]
    configured = Workspace(
        ws.root,
        ws.config.model_copy(update={"studio": ws.config.studio.model_copy(update={"url": "http://x"})}),
    )
    assert connect_once(configured, lines.append)() == "client" and started == [8089]
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://y")
    assert server.ensure_local(ws.studio_dir, ws.image_root, ws.config.studio) is None
