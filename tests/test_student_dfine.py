"""The D-FINE student (transformers, Apache-2.0): a tiny random-init D-FINE built from a config trains
for one epoch through the CLI on generated scenes, is evaluated, scores a pool; offline without
weights the error is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel import runs, students
from autolabel.cli.app import app
from autolabel.errors import AutolabelError
from autolabel.sampling.scorer import PoolScorer, ScorerSettings
from autolabel.sampling.uncertainty import CLASS_PROBS_KEY
from tests.test_train import IMGSZ, NetworkClosed, build_workspace
from tests.tiny_models import write_tiny_dfine_config


@pytest.fixture(scope="module")
def dfine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfine-ws")
    ws, store, truth = build_workspace(root)
    store.close()
    config = write_tiny_dfine_config(root / "tiny-dfine.json")
    network = NetworkClosed()
    with pytest.MonkeyPatch.context() as mp:
        network.install(mp)
        result = CliRunner().invoke(
            app,
            ["train", "-w", str(ws.root), "--student", "dfine-n", "--model", str(config),
             "--epochs", "1", "--imgsz", str(IMGSZ), "--batch", "4", "--device", "cpu"],
        )  # fmt: skip
    yield {"ws": ws, "result": result, "network": network, "truth": truth, "config": config}


def test_one_epoch_through_the_cli_records_a_run_with_pretrained_style_weights(dfine_run):
    result, ws = dfine_run["result"], dfine_run["ws"]
    assert result.exit_code == 0, result.output
    assert "run 1 finished" in result.output and "mAP50-95" in result.output
    assert "dfine's own val during training: loss" in result.output
    assert dfine_run["network"].attempts == []
    with ws.open_store() as store:
        run = runs.get(store, 1)
    weights = ws.runs_dir / "run-1" / "weights" / "best" / "model.safetensors"
    assert run.weights_path == str(weights) and weights.is_file()
    config = json.loads((weights.parent / "config.json").read_text())
    assert config["model_type"] == "d_fine"
    assert [config["id2label"][str(i)] for i in range(len(config["id2label"]))] == store_names(ws)
    assert run.params["student"] == "dfine-n" and run.params["pretrained"] is False
    assert run.metrics["train"]["epochs_run"] == 1 and run.metrics["train"]["seconds_per_epoch"] > 0
    assert run.metrics["trainer"]["backend"] == "dfine" and run.metrics["trainer"]["best_epoch"] == 1
    assert run.metrics["trainer"]["val_loss"] > 0 and "ultralytics" not in run.metrics
    assert "map50_95" in run.metrics and "ap_small" in run.metrics and "f1" in run.metrics
    assert (ws.runs_dir / "run-1" / "weights" / "last" / "model.safetensors").is_file()  # resumable per epoch


def store_names(ws) -> list[str]:
    with ws.open_store() as store:
        return store.class_names()


def test_eval_cli_on_the_dfine_run(dfine_run):
    ws = dfine_run["ws"]
    result = CliRunner().invoke(app, ["eval", "-w", str(ws.root), "--run", "1", "--conf", "0.01"])
    assert result.exit_code == 0, result.output
    assert "mAP50-95" in result.output and "per class" in result.output


def test_export_of_the_dfine_run_is_one_error_line_for_now(dfine_run):
    result = CliRunner().invoke(app, ["export", "-w", str(dfine_run["ws"].root), "--format", "onnx"])
    assert result.exit_code == 2, result.output
    assert "error: export of a dfine student is not supported yet" in result.output
    assert "Traceback" not in result.output


def test_the_pool_scorer_reads_class_probabilities_and_backbone_embeddings(dfine_run):
    ws = dfine_run["ws"]
    weights = ws.runs_dir / "run-1" / "weights" / "best" / "model.safetensors"
    assert students.backend_of(weights) == "dfine"
    scorer = PoolScorer(weights, ScorerSettings(imgsz=IMGSZ, conf=0.0, device="cpu", max_det=16))
    assert scorer.embeds
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(3)]
    rows = scorer.score_images(images)
    assert len(rows) == 3
    for row, image in zip(rows, images):
        assert {"entropy_sum", "margin_max", "least_confidence_mean", "instability"} <= set(row["scores"])
        embedding = np.asarray(row["embedding"], dtype=np.float32)
        assert embedding.ndim == 1 and abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-4
    student = students.load(weights)
    scored = student.score(images, conf=0.0, iou=0.7, imgsz=IMGSZ, max_det=16, device="cpu", embed=True)
    n_classes = len(store_names(ws))
    for s, image in zip(scored, images):
        det = s.detections
        assert len(det) == 16 and det.data[CLASS_PROBS_KEY].shape == (16, n_classes)
        assert (det.xyxy[:, 2] <= image.shape[1]).all() and (det.xyxy[:, 3] <= image.shape[0]).all()
        np.testing.assert_allclose(
            det.data[CLASS_PROBS_KEY][np.arange(16), det.class_id], det.confidence, rtol=1e-5
        )
    raw = student.predict(images, conf=0.0, imgsz=IMGSZ, max_det=16)
    np.testing.assert_allclose(raw[0].xyxy, scored[0].detections.xyxy, rtol=1e-5)
    assert student.class_names == store_names(ws)


def test_offline_without_weights_is_one_error_line(tmp_path, monkeypatch):
    ws, store, _ = build_workspace(tmp_path / "ws", n=4, n_val=1)
    store.close()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--student", "dfine-n", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "ustc-community/dfine-nano-coco" in errors[0], result.output
    assert "Traceback" not in result.output
    with ws.open_store() as store:
        assert runs.all_runs(store) == []


def test_student_names_pick_the_backend_and_its_default_model():
    assert students.for_student("yolo", "yolo11n.pt") == ("yolo", "yolo11n.pt")
    assert students.for_student("dfine-n", "yolo11n.pt") == ("dfine", "ustc-community/dfine-nano-coco")
    assert students.for_student("dfine-s", "my/model") == ("dfine", "my/model")
    with pytest.raises(AutolabelError, match="unknown student"):
        students.for_student("rtdetr", "x")
    assert students.backend_of("runs/run-1/weights/best.pt") == "yolo"
    assert students.backend_of("runs/run-1/weights/best/model.safetensors") == "dfine"


def test_the_loop_recipe_takes_the_student_from_the_cli():
    from autolabel.config import TrainConfig
    from autolabel.recipe import Recipe
    from autolabel.train import TrainSettings

    recipe = Recipe().with_overrides(student="dfine-s", model="tiny.json")
    assert recipe.train.student == "dfine-s" and recipe.train.model == "tiny.json"
    assert Recipe().train.student == "yolo" and TrainConfig().student == "yolo"  # YAML without it: unchanged
    assert TrainSettings.from_section(recipe.train).student == "dfine-s"
    with pytest.raises(AutolabelError, match="student"):
        Recipe().with_overrides(student="rtdetr")


def test_old_yolo_runs_keep_their_numbers_under_the_ultralytics_key(capsys):
    from autolabel.cli.train import print_metrics

    old = {"ultralytics": {"map50": 0.5, "map50_95": 0.25}, "map50_95": 0.2}
    assert runs.trainer_metrics(old) == {"backend": "yolo", "map50": 0.5, "map50_95": 0.25}
    assert runs.trainer_metrics({"trainer": {"backend": "dfine", "val_loss": 3.0}})["backend"] == "dfine"
    assert runs.trainer_metrics({"map50_95": 0.2}) == {}
    print_metrics(old, title="old run")
    assert "yolo's own val during training: mAP50 0.500, mAP50-95 0.250" in capsys.readouterr().out


def test_the_ema_decay_ramps_up_from_zero_as_dfine_trains_it():
    from autolabel.students.ema import EMA_DECAY, ema_decay

    assert ema_decay(0) == 0.0
    assert ema_decay(1000) == pytest.approx(EMA_DECAY * (1 - np.exp(-1)))
    assert ema_decay(10**6) == pytest.approx(EMA_DECAY)
    assert ema_decay(50) < ema_decay(500) < ema_decay(5000)


def _fit(dfine_run, run_dir, *, epochs: int, ema: bool):
    import torch

    from autolabel.students.dfine import build_model
    from autolabel.students.dfine_fit import dataset_split, fit_model
    from autolabel.train import TrainSettings

    data_yaml = dfine_run["ws"].runs_dir / "run-1" / "data" / "data.yaml"
    names, _ = dataset_split(data_yaml, "train")
    torch.manual_seed(0)
    model = build_model(dfine_run["config"], class_names=names)
    settings = TrainSettings(student="dfine-n", epochs=epochs, imgsz=IMGSZ, batch=4, ema=ema, warmup_epochs=1)
    fit_model(model, data_yaml, settings, run_dir, "cpu")
    return model


def _saved(run_dir, which: str = "last") -> dict:
    """The weights a student loads from the run's ``weights/<which>`` (as the model names them)."""
    from autolabel.students.dfine import build_model

    return build_model(run_dir / "weights" / which / "model.safetensors").state_dict()


def test_ema_weights_are_the_ones_saved_and_a_run_resumes_after_its_last_epoch(dfine_run, tmp_path):
    import torch

    straight = tmp_path / "straight"
    model = _fit(dfine_run, straight, epochs=2, ema=True)
    state = torch.load(straight / "weights" / "last" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["ema"]["n_averaged"].item() > 0
    saved = _saved(straight)
    trained = state["model"]  # the optimizer's weights: the EMA lags behind them
    moved = [k for k in saved if saved[k].is_floating_point() and not torch.equal(saved[k], trained[k])]
    assert moved, "the saved weights are the raw training weights, not their EMA"
    in_memory = model.state_dict()
    assert all(torch.equal(in_memory[k], saved[k]) for k in saved)  # the fit leaves the EMA in the model

    resumed = tmp_path / "resumed"
    _fit(dfine_run, resumed, epochs=1, ema=True)
    _fit(dfine_run, resumed, epochs=2, ema=True)  # picks up after epoch 1
    again = _saved(resumed)
    assert all(torch.allclose(again[k].float(), saved[k].float(), atol=1e-6) for k in saved)
    rows = (resumed / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]

    plain = tmp_path / "no-ema"
    _fit(dfine_run, plain, epochs=1, ema=False)
    state = torch.load(plain / "weights" / "last" / "train_state.pt", weights_only=True)
    saved = _saved(plain)
    assert state["ema"] is None and all(torch.equal(saved[k], state["model"][k]) for k in saved)
    from autolabel.errors import AutolabelError as Error

    with pytest.raises(Error, match="cannot resume from it .*without EMA"):
        _fit(dfine_run, plain, epochs=2, ema=True)


def test_a_random_init_fit_follows_the_seed(dfine_run, tmp_path):
    import torch

    from autolabel.students.base import ModelChoice
    from autolabel.students.dfine import DFineStudent
    from autolabel.train import TrainSettings

    data_yaml = dfine_run["ws"].runs_dir / "run-1" / "data" / "data.yaml"
    choice = ModelChoice(str(dfine_run["config"]), pretrained=False)
    weights = []
    for k, seed in enumerate((0, 0, 1)):
        torch.manual_seed(100 + k)  # whatever ran before in the process
        settings = TrainSettings(
            student="dfine-n", epochs=1, imgsz=IMGSZ, batch=4, seed=seed, val_each_epoch=False
        )
        DFineStudent.start(choice).fit(data_yaml, settings, tmp_path / f"run-{k}", "cpu")
        weights.append(_saved(tmp_path / f"run-{k}"))
    same = all(
        torch.allclose(weights[0][key].float(), weights[1][key].float(), atol=1e-6) for key in weights[0]
    )
    assert same and not all(torch.equal(weights[0][key], weights[2][key]) for key in weights[0])
