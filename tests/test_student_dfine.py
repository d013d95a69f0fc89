"""The D-FINE student (transformers, Apache-2.0): a tiny random-init D-FINE built from a config trains
for one epoch through the CLI on generated scenes, is evaluated, scores a pool, exports to ONNX with
parity, names and a latency row; offline without weights the error is one line."""

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


@pytest.fixture(scope="module")
def dfine_export(dfine_run):
    """The tiny run exported to fp32 ONNX through the CLI (parity boxes at conf 0.05: the 1-epoch
    model's scores are low, and a box-level match of two empty lists would prove nothing)."""
    ws = dfine_run["ws"]
    assert dfine_run["result"].exit_code == 0, dfine_run["result"].output
    result = CliRunner().invoke(app, ["export", "-w", str(ws.root), "--format", "onnx", "--conf", "0.05"])
    out_dir = ws.exports_dir / "1"
    return {**dfine_run, "export": result, "out_dir": out_dir, "onnx": out_dir / "onnx-fp32.onnx"}


RAW_TOLERANCE = 1e-4  # fp32 ONNX Runtime vs PyTorch; measured ~5e-7 on this model


def test_export_to_onnx_through_the_cli_passes_parity_and_records_it(dfine_export):
    result, out_dir = dfine_export["export"], dfine_export["out_dir"]
    assert result.exit_code == 0, result.output
    assert "max abs diff, logits" in result.output and "max abs diff, pred_boxes" in result.output
    assert (out_dir / "model" / "config.json").is_file() and (
        out_dir / "model" / "model.safetensors"
    ).is_file()
    assert not list(out_dir.glob("*.pt"))
    manifest = json.loads((out_dir / "exports.json").read_text())
    assert manifest["reference"] == "model/model.safetensors"
    parity = manifest["exports"]["onnx-fp32.onnx"]["parity"]
    assert parity["image_source"] == "validation" and parity["images"] == 4
    assert parity["max_abs_diff"] < RAW_TOLERANCE and parity["max_abs_diff_scores"] < RAW_TOLERANCE
    assert set(parity["raw_diffs"]) == {"logits", "pred_boxes"}
    assert max(parity["raw_diffs"].values()) == parity["max_abs_diff"]
    assert parity["conf"] == 0.05 and parity["boxes_reference"] >= 4 and parity["match_rate"] >= 0.95
    assert parity["map_diff_points"] <= 0.3 and parity["map_tolerance_points"] == 0.3
    assert parity["names_exported"] == store_names(dfine_export["ws"]) and parity["names_match"]
    assert parity["passed"]


def test_the_onnx_file_says_what_it_is_and_loads_as_a_dfine_student(dfine_export):
    import onnx

    from autolabel.exported.parity import detect, match_boxes
    from autolabel.images import decode
    from autolabel.students.yolo import names_list

    path = dfine_export["onnx"]
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    names = store_names(dfine_export["ws"])
    assert names_list(meta["names"]) == names
    assert meta["autolabel_student"] == "dfine" and meta["imgsz"] == f"[{IMGSZ}, {IMGSZ}]"
    assert "no letterbox" in meta["preprocess"] and "/255" in meta["preprocess"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, IMGSZ, IMGSZ]
    assert students.backend_of(path) == "dfine"

    exported = students.load(path)
    reference = students.load(dfine_export["out_dir"] / "model" / "model.safetensors")
    assert exported.class_names == names and not exported.can_embed
    images = [decode(p).pixels for p in sorted((dfine_export["ws"].image_root).rglob("*.png"))[:3]]
    raw = exported.predict(images, conf=0.0, imgsz=IMGSZ, max_det=8)  # 3 images through a batch-1 file
    assert [len(r.xyxy) for r in raw] == [8, 8, 8]
    for image in images:
        ours, theirs = (detect(s, image, IMGSZ, 0.0, "cpu") for s in (exported, reference))
        assert len(ours) == len(theirs) > 0 and match_boxes(ours, theirs) == len(ours)
    with pytest.raises(AutolabelError, match=f"takes {IMGSZ}x{IMGSZ} input"):
        exported.predict(images, conf=0.0, imgsz=2 * IMGSZ)


def test_bench_times_pytorch_and_onnxruntime_for_the_dfine_export(dfine_export):
    out_dir = dfine_export["out_dir"]
    args = ["bench", "-w", str(dfine_export["ws"].root), "--runs", "3", "--warmup", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["backend"]: r for r in json.loads((out_dir / "latency.json").read_text())["rows"]}
    assert set(rows) == {"pytorch", "onnxruntime"}
    assert rows["pytorch"]["file"] == "model.safetensors" and rows["onnxruntime"]["file"] == "onnx-fp32.onnx"
    assert all(r["runs"] == 3 and 0 < r["median_ms"] <= r["p90_ms"] for r in rows.values())
    card = (out_dir / "MODEL_CARD.md").read_text()
    assert "| onnxruntime | cpu | onnx-fp32.onnx | 1 |" in card


def test_the_model_card_states_the_apache_license_and_the_preprocessing(dfine_export):
    card = (dfine_export["out_dir"] / "MODEL_CARD.md").read_text()
    assert "Apache-2.0" in card and "AGPL" not in card
    assert "random initialization: no third-party weights" in card
    assert f"Input size: {IMGSZ} x {IMGSZ} (resized, no letterbox, /255)" in card
    assert "| onnx-fp32.onnx | onnx | fp32 |" in card


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--half"], "--half"),
        (["--int8"], "--int8"),
        (["--nms"], "--nms"),
        (["--format", "openvino"], "openvino"),
    ],
)
def test_unsupported_dfine_variants_are_one_error_line(dfine_export, flags, named):
    result = CliRunner().invoke(
        app, ["export", "-w", str(dfine_export["ws"].root), "--format", "onnx", *flags]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0]
    assert "not supported for the dfine student" in lines[0]


def test_raw_diff_pairs_reordered_queries_and_still_sees_real_differences():
    from autolabel.students.dfine_onnx import raw_diff

    rng = np.random.default_rng(0)
    logits, boxes = rng.normal(size=(2, 6, 3)), rng.uniform(size=(2, 6, 4))
    same = raw_diff([logits, boxes], [logits, boxes])
    assert same.overall == 0.0 and not same.reordered
    order = np.array([1, 0, 2, 3, 5, 4])  # near-tied encoder scores: same queries, another order
    swapped = raw_diff([logits, boxes], [logits[:, order], boxes[:, order]])
    assert swapped.overall == 0.0 and swapped.reordered
    moved = boxes.copy()
    moved[1, 2, 0] += 0.01
    off = raw_diff([logits, boxes], [logits[:, order], moved[:, order]])
    assert off.by_output["pred_boxes"] == pytest.approx(0.01) and off.by_output["logits"] == 0.0
    assert off.scores == 0.0 and off.overall == pytest.approx(0.01)
    with pytest.raises(AutolabelError, match="shape"):
        raw_diff([logits, boxes], [logits[:, :5], boxes[:, :5]])


@pytest.mark.parametrize(
    ("model", "pretrained", "says"),
    [
        ("tiny.json", False, "no third-party weights"),
        (
            "ustc-community/dfine-nano-coco",
            True,
            "fine-tuned from ustc-community/dfine-nano-coco, whose weights",
        ),
        ("someone/dfine-custom", True, "check the license of any other checkpoint"),
    ],
)
def test_the_license_note_names_code_and_weights(model, pretrained, says):
    note = students.backend_class("dfine").license_note(model=model, pretrained=pretrained)
    assert "Apache-2.0" in note and says in note
    assert "AGPL-3.0" in students.backend_class("yolo").license_note(model="yolo11n.pt", pretrained=True)


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
