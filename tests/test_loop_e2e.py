"""The active-learning loop for real: a Label Studio server, the replay annotator, tiny YOLO training.

One short loop runs in-process through the CLI; the kill-and-resume test kills a real `autolabel
loop` process with SIGKILL at several points of a round and checks that rerunning the same command
ends with no duplicate task, no lost annotation and no training repeated.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autolabel import runs
from autolabel.cli.app import app
from tests.conftest_studio import client_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.studio


def _scenes_workspace(studio, tmp_path, name, n=24):
    from autolabel.config import WorkspaceConfig
    from autolabel.synthetic import generate_dataset
    from autolabel.workspace import Workspace

    scenes = studio.images_base / name
    generate_dataset(scenes, n=n, seed=0, imgsz=96, groups=6)
    config = WorkspaceConfig(
        images=str(scenes / "images"),
        ontology=str(REPO / "prompts" / "fasteners.yaml"),
        studio={"url": studio.url, "project_title": f"loop {name}"},
    )
    ws = Workspace.create(tmp_path / "ws", config)
    return ws, scenes


def _loop_args(ws, scenes, rounds=2):
    return [
        "loop",
        "-w",
        str(ws.root),
        "--recipe",
        str(REPO / "loop" / "default.yaml"),
        "--annotator",
        "replay",
        "--labels",
        str(scenes),
        "--rounds",
        str(rounds),
        "--budget",
        "6",
        "--epochs",
        "1",
        "--imgsz",
        "64",
    ]


def _env(studio):
    return {"LABEL_STUDIO_URL": studio.url, "LABEL_STUDIO_API_KEY": studio.token}


def _invariants(ws, studio, rounds):
    """No duplicates, no loss: what every finished loop must satisfy, however often it was killed."""
    db = sqlite3.connect(ws.db_path)
    batches = db.execute("SELECT round, image_id FROM loop_batches ORDER BY round, rank").fetchall()
    batch_ids = [i for _, i in batches]
    assert len(batch_ids) == len(set(batch_ids)) == 6 * rounds  # no image selected twice
    labeled = {r[0] for r in db.execute("SELECT image_id FROM labels")}
    assert set(batch_ids) <= labeled  # every selected image came back labeled
    tasks = db.execute("SELECT image_id, task_id FROM studio_tasks WHERE state = 'pushed'").fetchall()
    assert sorted(i for i, _ in tasks) == sorted(batch_ids)  # one task per image
    project = db.execute("SELECT project_id FROM studio_projects").fetchone()[0]
    with client_for(studio) as client:
        assert client.task_ids(project) == {t for _, t in tasks}  # and nothing else on the server
    with ws.open_store() as store:
        finished = Counter(r.round for r in runs.all_runs(store, status="finished"))
    assert sorted(finished.items()) == [(r, 1) for r in range(rounds)]  # one finished training per round
    evals = db.execute(
        "SELECT round, result FROM loop_steps WHERE step = 'eval' AND status = 'done'"
    ).fetchall()
    assert [r for r, _ in evals] == list(range(rounds))
    assert [json.loads(res)["labels"] for _, res in evals] == [6 * (r + 1) for r in range(rounds)]
    return batches


def test_two_round_loop_with_replay_annotator(studio_server, tmp_path, monkeypatch):
    for key, value in _env(studio_server).items():
        monkeypatch.setenv(key, value)
    ws, scenes = _scenes_workspace(studio_server, tmp_path, "loop-e2e")
    result = CliRunner().invoke(app, ["init", "--images", str(scenes / "images"), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, _loop_args(ws, scenes))
    assert result.exit_code == 0, result.output
    assert "stopped:" in result.output
    _invariants(ws, studio_server, rounds=2)
    with ws.open_store() as store:
        params = [r.params for r in runs.all_runs(store, status="finished")]
    assert params[0].get("resume_from") is None and params[1].get("resume_from")  # round 1 warm-starts
    assert (params[0]["warmup_epochs"], params[1]["warmup_epochs"]) == (3.0, 0.0)  # ... without LR warm-up
    status = CliRunner().invoke(app, ["status", "-w", str(ws.root)])
    assert status.exit_code == 0, status.output
    assert "active-learning rounds" in status.output and "pre-labels by round" in status.output
    assert (ws.root / "previews" / "map_vs_labels.png").stat().st_size > 1000
    _status_json_matches_the_table(ws, status.output)
    _round_one_showed_the_calibrated_student_pre_labels(ws)
    # rerunning a finished loop changes nothing
    again = CliRunner().invoke(app, _loop_args(ws, scenes))
    assert again.exit_code == 0 and "stopped:" in again.output
    _invariants(ws, studio_server, rounds=2)


def _status_json_matches_the_table(ws, table_text: str) -> None:
    result = CliRunner().invoke(app, ["status", "-w", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    db = sqlite3.connect(ws.db_path)
    assert (
        report["images"]["validation"] + report["images"]["labeled"]
        == db.execute("SELECT COUNT(*) FROM images WHERE status IN ('labeled', 'validation')").fetchone()[0]
    )
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert [r["round"] for r in report["runs"]] == [0, 1] and all(
        r["status"] == "finished" for r in report["runs"]
    )
    assert report["runs"][0]["started_from"] == "yolo11n.yaml (random init)"  # offline: no official weights
    assert report["runs"][1]["warm_start"] is True
    lines = table_text.splitlines()
    for r in report["rounds"]:
        assert set(r) >= {"labels", "boxes", "human_seconds", "map50", "map50_95", "f1", "thresholds"}
        row = next(
            line
            for line in lines
            if line.strip("│ ").startswith(f"{r['round']} ") and f" {r['labels']} " in line
        )
        for key in ("map50", "map50_95", "f1"):
            assert f"{r[key]:.3f}" in row, (key, row)
        assert f"{r['human_seconds'] / 60:.1f} min" in row and f" {r['boxes']} " in row
        assert "…" not in table_text  # nothing truncated at the runner's 80 columns
    assert report["rounds"][0]["thresholds"] is None  # round 0: the open-vocabulary proposer's own thresholds
    thresholds = report["rounds"][1]["thresholds"]  # round 1: the student pre-labels, at recorded thresholds
    assert list(thresholds) == report["classes"] and all(0.05 <= t <= 0.95 for t in thresholds.values())


def _round_one_showed_the_calibrated_student_pre_labels(ws) -> None:
    from autolabel import detections as dets

    db = sqlite3.connect(ws.db_path)
    limits = json.loads(
        db.execute("SELECT thresholds FROM prelabel_calibration WHERE round = 1").fetchone()[0]
    )
    rows = db.execute(
        "SELECT t.model_version, t.shown FROM studio_tasks t JOIN loop_batches b ON b.image_id = t.image_id"
        " WHERE b.round = 1"
    ).fetchall()
    assert rows and all(version.startswith("student:") for version, _ in rows)
    stored = db.execute(
        "SELECT COUNT(*) FROM predictions p JOIN loop_batches b ON b.image_id = p.image_id"
        " WHERE b.round = 1 AND p.model_version LIKE 'student:%'"
    ).fetchone()[0]
    assert stored == len(rows)
    for _, shown in rows:  # stored at the 0.05 floor, shown at the round's thresholds
        det = dets.from_json(shown)
        assert all(c >= limits[k] for c, k in zip(det.confidence, det.class_id))


def _step_started(db_path: Path, round_index: int, step: str) -> bool:
    try:
        db = sqlite3.connect(db_path, timeout=1)
        row = db.execute(
            "SELECT status FROM loop_steps WHERE round = ? AND step = ?", (round_index, step)
        ).fetchone()
        db.close()
        return row is not None
    except sqlite3.Error:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [(0, "push"), (0, "wait"), (0, "train"), (1, "select")])
def test_kill_minus_nine_then_rerun_resumes(studio_server, tmp_path, kill_at):
    name = f"kill-{kill_at[0]}-{kill_at[1]}"
    ws, scenes = _scenes_workspace(studio_server, tmp_path, name)
    env = {**os.environ, **_env(studio_server)}
    cli = [sys.executable, "-m", "autolabel.cli.app"]
    subprocess.run(
        [*cli, "init", "--images", str(scenes / "images"), "-w", str(ws.root)], env=env, check=True
    )
    proc = subprocess.Popen(
        [*cli, *_loop_args(ws, scenes)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while not _step_started(ws.db_path, *kill_at):
        assert proc.poll() is None, "the loop ended before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # inside the step
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(
        [*cli, *_loop_args(ws, scenes)], env=env, capture_output=True, text=True, check=False
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    _invariants(ws, studio_server, rounds=2)


@pytest.mark.slow
def test_two_round_loop_on_ray_keeps_every_invariant(studio_server, tmp_path, monkeypatch):
    """`autolabel loop --engine ray`: round-0 pre-labels, pool scoring and embeddings on a local Ray."""
    pytest.importorskip("ray.data", reason="the ray extra is not installed")
    for key, value in _env(studio_server).items():
        monkeypatch.setenv(key, value)
    ws, scenes = _scenes_workspace(studio_server, tmp_path, "loop-ray")
    result = CliRunner().invoke(app, ["init", "--images", str(scenes / "images"), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*_loop_args(ws, scenes), "--engine", "ray", "--workers", "2:2"])
    assert result.exit_code == 0, result.output
    assert "scoring pool" in result.output  # round 1 scored the pool (on Ray)
    _invariants(ws, studio_server, rounds=2)


def test_propose_then_loop_round_zero_reuses_the_stored_prelabels(
    studio_server, tmp_path, monkeypatch, tiny_grounding_dino_dir
):
    """The README's workflow: `propose` with a model, then `loop`: round 0 shows the human what
    `propose` stored, without building the proposer again."""
    for key, value in _env(studio_server).items():
        monkeypatch.setenv(key, value)
    ws, scenes = _scenes_workspace(studio_server, tmp_path, "propose-loop")
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--images", str(scenes / "images"), "-w", str(ws.root)]).exit_code == 0
    proposed = runner.invoke(
        app,
        ["propose", "-w", str(ws.root), "--prompts", str(REPO / "prompts" / "fasteners.yaml"),
         "--model", "grounding-dino", "--model-path", str(tiny_grounding_dino_dir), "--box-threshold", "0.0",
         "--text-threshold", "0.0", "--max-det", "3", "--preview", "0", "--runtime", "torch"],
    )  # fmt: skip
    assert proposed.exit_code == 0, proposed.output

    def built_again(*args, **kwargs):
        raise AssertionError("round 0 built the proposer again instead of reusing its pre-labels")

    monkeypatch.setattr("autolabel.proposers.build_proposer", built_again)
    result = runner.invoke(app, _loop_args(ws, scenes, rounds=1))
    assert result.exit_code == 0, result.output
    assert "reusing the pre-labels 'propose' stored for 6 images" in result.output
    _invariants(ws, studio_server, rounds=1)
    db = sqlite3.connect(ws.db_path)
    step = db.execute("SELECT result FROM loop_steps WHERE round = 0 AND step = 'prelabel'").fetchone()
    assert json.loads(step[0])["reused"] == 6
    shown = db.execute("SELECT COUNT(*) FROM studio_tasks WHERE state = 'pushed'").fetchone()[0]
    assert shown == 6
