"""The active-learning loop with the D-FINE student (`loop --student dfine-n`): two replay rounds on
a tiny random-init D-FINE built from a config, through the CLI and a real Label Studio server."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from autolabel import runs
from autolabel.cli.app import app
from tests.test_loop_e2e import _env, _invariants, _loop_args, _scenes_workspace
from tests.tiny_models import write_tiny_dfine_config

pytestmark = pytest.mark.studio


def test_two_round_replay_loop_with_the_dfine_student(studio_server, tmp_path, monkeypatch):
    for key, value in _env(studio_server).items():
        monkeypatch.setenv(key, value)
    ws, scenes = _scenes_workspace(studio_server, tmp_path, "loop-dfine", n=18)
    config = write_tiny_dfine_config(tmp_path / "tiny-dfine.json")
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--images", str(scenes / "images"), "-w", str(ws.root)]).exit_code == 0
    args = [*_loop_args(ws, scenes), "--student", "dfine-n", "--model", str(config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "stopped: round limit (2) reached" in result.output
    _invariants(ws, studio_server, rounds=2)
    with ws.open_store() as store:
        finished = runs.all_runs(store, status="finished")
    assert [r.params["student"] for r in finished] == ["dfine-n", "dfine-n"]
    assert finished[0].params["resume_from"] is None
    assert finished[1].params["resume_from"] == finished[0].weights_path  # round 1 warm-starts from round 0
    for run in finished:
        assert run.weights_path.endswith("weights/best/model.safetensors")
        assert run.metrics["map50_95"] is not None and run.metrics["trainer"]["backend"] == "dfine"
    db = sqlite3.connect(ws.db_path)
    evals = [json.loads(r[0]) for r in db.execute("SELECT result FROM loop_steps WHERE step = 'eval'")]
    assert all(e["map50_95"] is not None for e in evals)
    select = json.loads(
        db.execute("SELECT result FROM loop_steps WHERE round = 1 AND step = 'select'").fetchone()[0]
    )
    assert select["strategy"] == "hybrid" and select["n"] == 6  # the D-FINE student scored the pool
    # round 1's batch was pre-labeled by the round-0 D-FINE student, stored and shown in Label Studio
    rows = db.execute(
        "SELECT t.model_version FROM studio_tasks t JOIN loop_batches b ON b.image_id = t.image_id"
        " WHERE b.round = 1"
    ).fetchall()
    assert len(rows) == 6 and all(version.startswith("student:") for (version,) in rows)
    stored = db.execute(
        "SELECT COUNT(*) FROM predictions p JOIN loop_batches b ON b.image_id = p.image_id"
        " WHERE b.round = 1 AND p.model_version LIKE 'student:%'"
    ).fetchone()[0]
    assert stored == 6
    status = runner.invoke(app, ["status", "-w", str(ws.root), "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert report["runs"][0]["started_from"] == "tiny-dfine.json (random init)"
    assert report["runs"][1]["warm_start"] is True
    from autolabel.report import collect

    with ws.open_store() as store:
        page = collect(ws, store)  # what the loop's report step renders
    assert page["run"]["id"] == 2 and [r["round"] for r in page["rounds"]] == [0, 1]
    assert page["gallery"], "the report's gallery did not run the D-FINE student on the val images"
