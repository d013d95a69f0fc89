"""Student training: dataset materialization, model choice, and a real 1-epoch run with the network closed."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel import runs
from autolabel.errors import AutolabelError
from autolabel.evaluate import evaluate_run
from autolabel.formats import yolo
from autolabel.formats.yolo import dataset_file_name
from autolabel.runs import images_hash
from autolabel.students.yolo import resolve_model
from autolabel.train import (
    TrainSettings,
    collect_dataset,
    train_student,
    write_yolo_dataset,
)

N_IMAGES, N_VAL, IMGSZ = 12, 4, 64


def build_workspace(root: Path, n: int = N_IMAGES, n_val: int = N_VAL):
    """Synthetic scenes in 3 folders; the last ``n_val`` frozen as validation, the rest labeled."""
    from PIL import Image

    from autolabel.config import WorkspaceConfig
    from autolabel.registry import register_images
    from autolabel.synthetic import CLASS_NAMES, generate_scene
    from autolabel.workspace import Workspace

    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n):
        pixels, det = generate_scene(
            rng, IMGSZ, n_objects=(1, 3), scale=(0.25, 0.45), clutter=False, blur=False
        )
        rel = f"g{i % 3}/scene_{i:02d}.png"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / rel)
        truth[rel] = det
    ws = Workspace.create(root, WorkspaceConfig(images="images"))
    store = ws.open_store()
    register_images(store, ws.image_root, ws.config.grouping)
    store.ensure_classes(CLASS_NAMES)
    for index, image in enumerate(store.images()):
        status = "validation" if index >= n - n_val else "labeled"
        store.set_labels(image.id, "import", dets.to_json(truth[image.path]), status=status)
    return ws, store, truth


class NetworkClosed:
    """Every DNS lookup or connect is recorded and refused."""

    def __init__(self):
        self.attempts: list[str] = []

    def install(self, mp: pytest.MonkeyPatch) -> None:
        def refuse(kind):
            def inner(*args, **kwargs):
                import traceback

                where = "".join(traceback.format_stack(limit=8)[:-1])
                self.attempts.append(f"{kind} {args[1:2] if kind == 'connect' else args[:1]}\n{where}")
                raise OSError("network closed by the test")

            return inner

        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        mp.setattr(socket, "create_connection", refuse("create_connection"))
        mp.setattr(socket.socket, "connect", refuse("connect"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real 1-epoch training of yolo11n.yaml at 64 px on 8 images, with the network closed."""
    root = tmp_path_factory.mktemp("train-ws")
    ws, store, truth = build_workspace(root)
    network = NetworkClosed()
    with pytest.MonkeyPatch.context() as mp:
        network.install(mp)
        # deterministic=False only to skip torch's deterministic-mode import (seconds on a busy CPU)
        settings = TrainSettings(
            model="yolo11n.pt", epochs=1, imgsz=IMGSZ, batch=4, workers=0, device="cpu", deterministic=False
        )
        warnings: list[str] = []
        run_id = train_student(ws, store, settings, warn=warnings.append)
        evaluate_run(ws, store, run_id, conf=settings.conf, iou=settings.iou)  # what 'autolabel train' does
    yield {
        "ws": ws,
        "store": store,
        "run_id": run_id,
        "network": network,
        "warnings": warnings,
        "truth": truth,
    }
    store.close()


def test_training_records_a_run_with_weights_lineage_and_metrics(trained):
    store, run_id = trained["store"], trained["run_id"]
    run = runs.get(store, run_id)
    assert run.status == "finished" and run.round == 0 and run.kind == "train"
    assert run.n_train == N_IMAGES - N_VAL and run.n_val == N_VAL
    train_shas = [im.sha256 for im in store.images(status="labeled")]
    assert run.train_hash == images_hash(reversed(train_shas)) == images_hash(train_shas)
    assert run.val_hash == images_hash(im.sha256 for im in store.images(status="validation"))
    assert run.train_hash != run.val_hash
    weights = Path(run.weights_path)
    assert weights.is_file() and weights.name == "best.pt"
    assert weights.parent.parent == trained["ws"].runs_dir / f"run-{run_id}"
    params = run.params
    assert params["epochs"] == 1 and params["imgsz"] == IMGSZ and params["seed"] == 0
    assert params["model_source"] == "yolo11n.yaml" and params["pretrained"] is False
    metrics = run.metrics
    for key in (
        "map50",
        "map50_95",
        "ap_small",
        "ap_medium",
        "ap_large",
        "per_class_ap",
        "precision",
        "recall",
        "f1",
        "conf",
        "iou",
        "confusion_matrix",
    ):
        assert key in metrics, key
    assert metrics["val_hash_matches_run"] is True
    assert metrics["n_images"] == N_VAL
    assert metrics["train"]["epochs_run"] == 1 and metrics["train"]["seconds_per_epoch"] > 0
    assert metrics["train"]["cpu_seconds"] > 0
    assert (
        set(metrics["trainer"]) >= {"backend", "map50", "map50_95"}
        and metrics["trainer"]["backend"] == "yolo"
    )
    assert Path(metrics["preview"]).is_file()
    assert (trained["ws"].runs_dir / f"run-{run_id}" / "results.png").is_file()  # plots work offline


def test_training_never_touched_the_network(trained, cache_dir):
    import os

    assert trained["network"].attempts == []
    from ultralytics.utils import USER_CONFIG_DIR

    assert Path(USER_CONFIG_DIR).parent == Path(os.environ["YOLO_CONFIG_DIR"])
    assert (Path(USER_CONFIG_DIR) / "Arial.ttf").is_file()  # the local stand-in, not a download
    assert any("yolo11n.pt not found" in w and "from scratch" in w for w in trained["warnings"])


def test_materialized_dataset_matches_the_store(trained):
    run_dir = trained["ws"].runs_dir / f"run-{trained['run_id']}" / "data"
    data = __import__("yaml").safe_load((run_dir / "data.yaml").read_text())
    assert data["names"] == {0: "bolt", 1: "nut", 2: "washer", 3: "screw"} and data["nc"] == 4
    images = sorted((run_dir / "images" / "train").iterdir())
    assert len(images) == N_IMAGES - N_VAL and all(p.is_symlink() for p in images)
    assert len(list((run_dir / "images" / "val").iterdir())) == N_VAL
    store = trained["store"]
    by_name = {dataset_file_name(im.id, im.path): im for im in store.images()}
    for image in images:
        record = by_name[image.name]
        lines = (run_dir / "labels" / "train" / f"{image.stem}.txt").read_text().splitlines()
        back = yolo.from_lines(lines, record.width, record.height)
        expected = trained["truth"][record.path]
        assert back.class_id.tolist() == expected.class_id.tolist()
        np.testing.assert_allclose(back.xyxy, expected.xyxy, atol=0.01)


def test_warm_start_from_previous_student_is_a_new_run_in_the_current_round(trained):
    store = trained["store"]
    first = runs.get(store, trained["run_id"])
    store.set_meta("round", "1")
    try:
        settings = TrainSettings(
            epochs=2,
            imgsz=IMGSZ,
            batch=4,
            workers=0,
            device="cpu",
            resume_from=first.weights_path,
            evaluate=False,
            plots=False,
            deterministic=False,
            val_each_epoch=False,
            warmup_epochs=0.0,
        )
        run_id = train_student(trained["ws"], store, settings)
    finally:
        store.set_meta("round", "0")
    run = runs.get(store, run_id)
    assert run_id != trained["run_id"] and run.round == 1 and run.status == "finished"
    assert run.params["model_source"] == str(Path(first.weights_path).resolve())
    assert Path(run.weights_path).is_file()
    # no per-epoch validation: nothing picks a checkpoint on val, the student is the last epoch
    weights = Path(run.weights_path).parent
    import torch

    best, last = (
        torch.load(weights / name, weights_only=False)["model"].state_dict()
        for name in ("best.pt", "last.pt")
    )
    assert best.keys() == last.keys() and all(torch.equal(best[k], last[k]) for k in best)


# -- pure pieces ------------------------------------------------------------------------------


def test_resolve_model(tmp_path):
    assert resolve_model("yolo11s.yaml").source == "yolo11s.yaml"
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"x")
    assert resolve_model(str(weights)).source == str(weights.resolve())
    (tmp_path / "wdir").mkdir()
    (tmp_path / "wdir" / "yolo11n.pt").write_bytes(b"x")
    found = resolve_model("yolo11n.pt", tmp_path / "wdir")
    assert (
        found.pretrained and found.source == str(tmp_path / "wdir" / "yolo11n.pt") and found.warning is None
    )
    fallback = resolve_model("yolo11s.pt", tmp_path / "wdir")
    assert (
        fallback.source == "yolo11s.yaml" and not fallback.pretrained and "from scratch" in fallback.warning
    )
    with pytest.raises(AutolabelError, match="not found"):
        resolve_model(str(tmp_path / "missing" / "best.pt"))


def test_dataset_file_names_do_not_collide():
    names = {dataset_file_name(i, p) for i, p in enumerate(["a/img 1.JPG", "b/img 1.JPG", "img:1.png"])}
    assert len(names) == 3 and all(" " not in n and ":" not in n for n in names)
    assert dataset_file_name(7, "a/img 1.JPG") == "000007_img_1.jpg"


def test_collect_dataset_problems(tmp_path):
    _ws, store, _ = build_workspace(tmp_path, n=4, n_val=1)
    with store:
        snapshot = collect_dataset(store)
        assert (len(snapshot.train), len(snapshot.val)) == (3, 1)
        # a labeled image without a labels row is skipped and said so
        store.add_images(
            [
                {
                    "path": "ghost.png",
                    "sha256": "0" * 64,
                    "size_bytes": 1,
                    "width": 8,
                    "height": 8,
                    "source_group": "x",
                    "status": "labeled",
                }
            ]
        )
        snapshot = collect_dataset(store)
        assert len(snapshot.train) == 3 and any("ghost.png" in s for s in snapshot.skipped)
        # a class id outside the store's classes is one clear error
        image = store.images(status="labeled")[0]
        store.set_labels(image.id, "import", dets.to_json(dets.make([[1, 1, 5, 5]], [9])))
        with pytest.raises(AutolabelError, match=r"class ids \[9\]"):
            collect_dataset(store)
        store.set_labels(image.id, "import", dets.to_json(dets.empty()))
        # no frozen validation set
        store.set_status([im.id for im in store.images(status="validation")], "labeled")
        with pytest.raises(AutolabelError, match="autolabel split"):
            collect_dataset(store)


def test_write_yolo_dataset_writes_empty_label_files_for_background_images(tmp_path):
    ws, store, _ = build_workspace(tmp_path, n=3, n_val=1)
    with store:
        image = store.images(status="labeled")[0]
        store.set_labels(image.id, "import", dets.to_json(dets.empty()))
        data_yaml = write_yolo_dataset(collect_dataset(store), ws.image_root, tmp_path / "data")
    label = (
        tmp_path
        / "data"
        / "labels"
        / "train"
        / Path(dataset_file_name(image.id, image.path)).with_suffix(".txt")
    )
    assert label.is_file() and label.read_text() == ""
    assert data_yaml.is_file()


# -- CLI ----------------------------------------------------------------------------------------


def test_eval_cli_end_to_end(trained):
    from typer.testing import CliRunner

    from autolabel.cli.app import app

    ws, run_id = trained["ws"], trained["run_id"]
    result = CliRunner().invoke(
        app, ["eval", "--workspace", str(ws.root), "--run", str(run_id), "--conf", "0.01", "--iou", "0.4"]
    )
    assert result.exit_code == 0, result.output
    assert "mAP50-95" in result.output and "confusion" in result.output
    saved = json.loads((ws.runs_dir / f"run-{run_id}" / "eval" / "metrics.json").read_text())
    assert saved["conf"] == 0.01 and saved["iou"] == 0.4 and saved["n_images"] == N_VAL
    recorded = runs.get(trained["store"], run_id).metrics
    assert recorded["conf"] == 0.01 and "trainer" in recorded and "train" in recorded  # merged, not replaced

    missing = CliRunner().invoke(app, ["eval", "--workspace", str(ws.root), "--run", "999"])
    assert missing.exit_code == 2 and "error: no run 999" in missing.output


def test_train_cli_without_a_validation_set_is_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from autolabel.cli.app import app

    ws, store, _ = build_workspace(tmp_path, n=3, n_val=0)
    store.close()
    result = CliRunner().invoke(app, ["train", "--workspace", str(ws.root), "--epochs", "1"])
    assert result.exit_code == 2
    assert "error: no validation images" in result.output and "Traceback" not in result.output
    with ws.open_store() as store:
        assert runs.all_runs(store) == []  # nothing recorded for a training that never started


def test_train_cli_offline_without_weights_warns_in_one_line_and_trains(tmp_path):
    from typer.testing import CliRunner

    from autolabel.cli.app import app

    ws, store, _ = build_workspace(tmp_path, n=6, n_val=2)
    store.close()
    result = CliRunner().invoke(
        app,
        ["train", "-w", str(ws.root), "--epochs", "1", "--imgsz", str(IMGSZ), "--batch", "4", "--offline"],
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "warning:" in line]
    assert (
        len(warnings) == 1
        and "yolo11n.pt not found (offline)" in warnings[0]
        and "from scratch" in warnings[0]
    )
    assert "Traceback" not in result.output and "run 1 finished" in result.output


def test_missing_official_weights_are_fetched_through_ultralytics_when_online(tmp_path, monkeypatch):
    """The download itself needs the internet; what is ours is when it is asked for and where it lands.

    As in the CLI, autolabel's hygiene has set YOLO_OFFLINE=1 for the process (the user did not):
    the fetch must still happen, with that flag lifted for it alone."""
    import os

    import ultralytics.utils
    from ultralytics.utils import downloads

    from autolabel.runtime import USER_OFFLINE_ENV, configure_environment

    asked = []

    def fake_download(file, *args, **kwargs):
        assert "YOLO_OFFLINE" not in os.environ  # lifted for the download
        asked.append(Path(file))
        Path(file).write_bytes(b"weights")
        return str(file)

    monkeypatch.delenv(USER_OFFLINE_ENV, raising=False)
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    configure_environment(tmp_path / "cache")  # the user set nothing; autolabel defaults YOLO_OFFLINE=1
    assert os.environ["YOLO_OFFLINE"] == "1"
    # ultralytics' own check answers offline while YOLO_OFFLINE is set, as the real one does
    monkeypatch.setattr(ultralytics.utils, "is_online", lambda: "YOLO_OFFLINE" not in os.environ)
    monkeypatch.setattr(downloads, "attempt_download_asset", fake_download)
    choice = resolve_model("yolo11n.pt", tmp_path / "weights")
    assert asked == [tmp_path / "weights" / "yolo11n.pt"]
    assert (
        choice.pretrained
        and choice.source == str(tmp_path / "weights" / "yolo11n.pt")
        and choice.warning is None
    )
    assert os.environ["YOLO_OFFLINE"] == "1"  # and put back for everything else

    asked.clear()  # not an official asset name: never asked for, the scratch fallback
    assert not resolve_model("my-own.pt", tmp_path / "weights").pretrained and asked == []
    # --offline, or the user's own YOLO_OFFLINE=1: nothing is asked for
    assert not resolve_model("yolo11s.pt", tmp_path / "weights", download=False).pretrained
    monkeypatch.setenv(USER_OFFLINE_ENV, "1")
    fallback = resolve_model("yolo11s.pt", tmp_path / "weights")
    assert asked == [] and not fallback.pretrained and "(offline)" in fallback.warning

    def failing(file, *args, **kwargs):
        raise ConnectionError("no route")

    monkeypatch.setenv(USER_OFFLINE_ENV, "")
    monkeypatch.setattr(downloads, "attempt_download_asset", failing)
    assert not resolve_model("yolo11m.pt", tmp_path / "weights").pretrained  # a failed download falls back


def test_the_users_yolo_offline_is_remembered_before_the_hygiene_default(monkeypatch, tmp_path):
    from autolabel.runtime import USER_OFFLINE_ENV, configure_environment, offline_requested

    monkeypatch.delenv(USER_OFFLINE_ENV, raising=False)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    configure_environment(tmp_path / "a")
    assert offline_requested()
    monkeypatch.delenv(USER_OFFLINE_ENV)
    monkeypatch.delenv("YOLO_OFFLINE")
    configure_environment(tmp_path / "b")
    assert not offline_requested()


def test_a_killed_training_run_is_marked_failed_by_the_next_command(tmp_path):
    import os
    import subprocess

    from autolabel.status import status_report

    _ws, store, _ = build_workspace(tmp_path, n=3, n_val=1)
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    killed = runs.start(store, {"pid": gone.pid, "host": host})
    live = runs.start(store, {"pid": os.getpid(), "host": host})
    elsewhere = runs.start(store, {"pid": gone.pid, "host": host + "-other"})
    assert runs.reconcile_interrupted(store) == [killed]
    states = {r.id: r.status for r in runs.all_runs(store)}
    assert states == {killed: "failed", live: "started", elsewhere: "started"}
    assert "interrupted" in runs.get(store, killed).metrics["error"]
    assert [r["status"] for r in status_report(store)["runs"]] == ["failed", "started", "started"]
    store.close()
