"""Export: a tiny student trained here (1 epoch, 64 px) goes to ONNX and is checked against PyTorch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel import detections as dets
from autolabel import runs
from autolabel.errors import AutolabelError

NAMES = ["washer", "bolt", "nut"]  # not alphabetical: the order itself must survive the export
IMGSZ = 64
COLORS = {0: (230, 200, 30), 1: (220, 30, 30), 2: (30, 40, 220)}


# -- builders -----------------------------------------------------------------------------------
def draw_scene(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """A gray image with two or three solid rectangles; returns pixels and (class, xyxy) boxes."""
    pixels = np.full((size, size, 3), 190, np.uint8)
    boxes = []
    for _ in range(int(rng.integers(2, 4))):
        cls = int(rng.integers(0, len(NAMES)))
        w, h = (int(v) for v in rng.integers(18, 40, 2))
        x, y = (int(v) for v in rng.integers(0, size - 40, 2))
        pixels[y : y + h, x : x + w] = COLORS[cls]
        boxes.append((cls, [x, y, x + w, y + h]))
    return pixels, boxes


def train_tiny_student(dataset: Path, images: list[tuple[Path, list]], out: Path) -> Path:
    """One epoch of yolo11n (random init from its yaml) at 64 px on ``images``; returns best.pt."""
    from PIL import Image

    from autolabel.runtime import configure_ultralytics

    for split in ("train", "val"):
        (dataset / split / "images").mkdir(parents=True, exist_ok=True)
        (dataset / split / "labels").mkdir(parents=True, exist_ok=True)
    for i, (path, boxes) in enumerate(images):
        split = "val" if i % 4 == 3 else "train"
        size = Image.open(path).size[0]
        (dataset / split / "images" / path.name).write_bytes(path.read_bytes())
        lines = [
            f"{c} {(x1 + x2) / 2 / size} {(y1 + y2) / 2 / size} {(x2 - x1) / size} {(y2 - y1) / size}"
            for c, (x1, y1, x2, y2) in boxes
        ]
        (dataset / split / "labels" / f"{path.stem}.txt").write_text("\n".join(lines))
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(NAMES))
    data = dataset / "data.yaml"
    data.write_text(f"path: {dataset}\ntrain: train/images\nval: val/images\nnames:\n{names}\n")
    configure_ultralytics()
    from ultralytics import YOLO

    model = YOLO("yolo11n.yaml")
    model.train(
        data=str(data), epochs=1, imgsz=IMGSZ, batch=4, device="cpu", workers=0, seed=0, deterministic=True,
        project=str(out), name="tiny", exist_ok=True, plots=False, amp=False, val=False, verbose=False,
    )  # fmt: skip
    return Path(model.trainer.best)


def make_it_speak(weights: Path, out: Path) -> Path:
    """A 1-epoch student scores every box near 0.001; class biases of -1 make it emit ~15 boxes per
    image at conf 0.25, so box-level parity compares real boxes rather than two empty lists."""
    import torch
    from ultralytics import YOLO

    model = YOLO(str(weights))
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.fill_(-1.0)
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """A workspace with 12 images (4 frozen for validation), labels, and one finished run."""
    from PIL import Image

    from autolabel.config import WorkspaceConfig
    from autolabel.registry import register_images
    from autolabel.workspace import Workspace

    root = tmp_path_factory.mktemp("export-ws")
    rng = np.random.default_rng(0)
    image_dir = root / "images"
    image_dir.mkdir()
    scenes = []
    for i in range(12):
        pixels, boxes = draw_scene(rng)
        path = image_dir / f"img{i:02d}.png"
        Image.fromarray(pixels).save(path)
        scenes.append((path, boxes))
    weights = make_it_speak(
        train_tiny_student(root / "dataset", scenes, root / "train-runs"), root / "student.pt"
    )

    ws = Workspace.create(root, WorkspaceConfig(images="images"))
    with ws.open_store() as store:
        store.ensure_classes(NAMES)
        register_images(store, ws.image_root, ws.config.grouping)
        by_path = {r.path: r.id for r in store.images()}
        val_ids = []
        for i, (path, boxes) in enumerate(scenes):
            image_id = by_path[path.name]
            det = dets.make([b for _, b in boxes], [c for c, _ in boxes])
            status = "validation" if i % 4 == 3 else "labeled"
            store.set_labels(image_id, "studio" if i < 6 else "import", dets.to_json(det), status=status)
            if status == "validation":
                val_ids.append(image_id)
        metrics = {"map50": 0.01, "map50_95": 0.004, "f1": 0.02, "conf": 0.25, "round": 0}
        run_id = runs.start(
            store, {"imgsz": IMGSZ, "epochs": 1, "model": "yolo11n.yaml", "api_key": "sk-never-shown"},
            round_index=0, train_hash="t" * 64, val_hash="v" * 64, n_train=8, n_val=4,
        )  # fmt: skip
        runs.finish(store, run_id, "finished", weights_path=str(weights), metrics=metrics)
    return {"root": root, "run_id": run_id, "weights": weights, "val_ids": val_ids}


@pytest.fixture(scope="session")
def exported(trained) -> dict:
    from autolabel.cli.app import app

    result = CliRunner().invoke(app, ["export", "--format", "onnx", "--workspace", str(trained["root"])])
    assert result.exit_code == 0, result.output
    out_dir = trained["root"] / "exports" / str(trained["run_id"])
    return {**trained, "out_dir": out_dir, "onnx": out_dir / "onnx-fp32.onnx", "output": result.output}


# -- the real export ----------------------------------------------------------------------------
def test_export_writes_onnx_card_and_manifest_next_to_the_weights(exported):
    out_dir = exported["out_dir"]
    assert {p.name for p in out_dir.iterdir()} >= {
        "model.pt", "onnx-fp32.onnx", "exports.json", "MODEL_CARD.md", "model_card.json"
    }  # fmt: skip
    assert not list(out_dir.glob("onnx-fp32.pt"))  # the per-variant link is removed again
    entry = json.loads((out_dir / "exports.json").read_text())["exports"]["onnx-fp32.onnx"]
    parity = entry["parity"]
    assert parity["image_source"] == "validation" and parity["images"] == 3
    assert parity["names_exported"] == NAMES and parity["names_match"]
    assert parity["max_abs_diff"] < 1e-3
    assert parity["conf"] == 0.25 and parity["boxes_reference"] >= 3 * 5 and parity["match_rate"] >= 0.95
    assert parity["map_diff_points"] <= 0.3 and parity["passed"]
    assert "boxes matched" in exported["output"] and "3 validation images" in exported["output"]


def test_onnx_reloaded_with_onnxruntime_matches_pytorch_raw_outputs_and_names(exported):
    import ast

    import onnxruntime as ort

    from autolabel import students
    from autolabel.exported.runtimes import torch_outputs
    from autolabel.images import decode
    from autolabel.students.yolo_export import letterbox

    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    names = ast.literal_eval(session.get_modelmeta().custom_metadata_map["names"])
    assert [names[i] for i in sorted(names)] == NAMES
    model = students.load(exported["out_dir"] / "model.pt").torch_module()
    for path in sorted((exported["root"] / "images").glob("*.png"))[:4]:
        x = letterbox(decode(path).pixels, IMGSZ)
        onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
        torch_out = torch_outputs(model, x)[0]
        assert (
            onnx_out.shape
            == torch_out.shape
            == (1, 4 + len(NAMES), (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + 4)
        )
        np.testing.assert_allclose(onnx_out, torch_out, atol=1e-3, rtol=0)


def test_onnx_through_ultralytics_gives_the_same_boxes_as_the_pt(exported):
    from autolabel import students
    from autolabel.exported.parity import detect, match_boxes
    from autolabel.images import decode

    pt, onnx_model = students.load(exported["out_dir"] / "model.pt"), students.load(exported["onnx"])
    assert onnx_model.class_names == pt.class_names == NAMES
    rgbs = [decode(p).pixels for p in sorted((exported["root"] / "images").glob("*.png"))[:4]]
    ref = [detect(pt, rgb, IMGSZ, conf=0.25, device="cpu") for rgb in rgbs]
    onnx = [detect(onnx_model, rgb, IMGSZ, conf=0.25, device="cpu") for rgb in rgbs]
    # This near-untrained student emits clusters of near-identical boxes at near-equal scores, where
    # 1e-6 differences can flip one NMS decision: allow one box per image, none overall beyond 10%.
    assert all(len(a) >= 5 and abs(len(a) - len(b)) <= 1 for a, b in zip(ref, onnx))
    matched = sum(match_boxes(a, b) for a, b in zip(ref, onnx))
    assert matched >= 0.9 * sum(max(len(a), len(b)) for a, b in zip(ref, onnx))


def test_model_card_has_the_facts_and_no_secrets(exported):
    out_dir = exported["out_dir"]
    card = (out_dir / "MODEL_CARD.md").read_text()
    data = json.loads((out_dir / "model_card.json").read_text())
    assert data["classes"] == NAMES and data["imgsz"] == IMGSZ and data["round"] == 0
    assert data["lineage"] == {"train_hash": "t" * 64, "val_hash": "v" * 64, "n_train": 8, "n_val": 4}
    assert data["labels"]["by_source"]["studio"]["images"] == 6 and data["labels"]["images"] == 12
    assert data["human_time"]["seconds"] is None  # no Label Studio corrections were recorded
    assert data["human_time"]["seconds_from_scratch"] > 0
    assert data["validation_metrics"]["map50_95"] == 0.004
    for text in ("0: washer, 1: bolt, 2: nut", "AGPL-3.0", "onnx-fp32.onnx", "t" * 64, "3 validation images"):
        assert text in card
    for secret in ("sk-never-shown", "api_key"):
        assert secret not in card and secret not in json.dumps(data)


def test_bench_times_pytorch_and_onnxruntime_and_updates_the_card(exported):
    from autolabel.cli.app import app

    args = [
        "bench",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--batch",
        "1",
        "--batch",
        "2",
        "--workspace",
        str(exported["root"]),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    latency = json.loads((exported["out_dir"] / "latency.json").read_text())
    rows = {(r["backend"], r["batch"]): r for r in latency["rows"]}
    assert set(rows) == {("pytorch", 1), ("onnxruntime", 1), ("pytorch", 2)}  # static ONNX: batch 1 only
    assert all(r["runs"] == 3 and 0 < r["median_ms"] <= r["p90_ms"] for r in rows.values())
    assert rows[("pytorch", 1)]["speedup"] == pytest.approx(1.0)
    assert any("fixed batch of 1" in note for note in latency["notes"])
    assert "speedup vs PyTorch eager" in (exported["out_dir"] / "MODEL_CARD.md").read_text()


def test_parity_falls_back_to_labeled_images_without_a_validation_set(trained, tmp_path):
    from autolabel.exported.parity import parity_images
    from autolabel.store import Store

    with Store.open(trained["root"] / ".autolabel" / "state.db") as store:
        images, source = parity_images(store, trained["root"] / "images")
        assert source == "validation" and {im.image_id for im in images} == set(trained["val_ids"])
        copy = Store.open(tmp_path / "copy.db")
        store.conn.backup(copy.conn)
    copy.set_status(trained["val_ids"], "labeled")
    images, source = parity_images(copy, trained["root"] / "images", limit=5)
    assert source == "labeled" and len(images) == 5
    copy.close()


@pytest.mark.slow
def test_dynamic_nms_export_keeps_boxes(exported):
    from autolabel.export import export_weights
    from autolabel.exported.options import ExportOptions
    from autolabel.exported.parity import check_parity, parity_images
    from autolabel.store import Store

    options = ExportOptions(format="onnx", imgsz=IMGSZ, dynamic=True, nms=True)
    path = export_weights(exported["weights"], exported["out_dir"], options)
    assert path.name == "onnx-fp32-dynamic-nms.onnx"
    with Store.open(exported["root"] / ".autolabel" / "state.db") as store:
        images, source = parity_images(store, exported["root"] / "images")
    report = check_parity(exported["out_dir"] / "model.pt", path, options, images, source, conf=0.01)
    assert report.max_abs_diff is None and report.names_match
    assert report.map_diff_points <= 0.3


# -- errors that must be one line ---------------------------------------------------------------
def test_tensorrt_without_cuda_is_one_clear_line(trained, monkeypatch):
    import torch

    from autolabel.cli.app import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["export", "--format", "engine", "--workspace", str(trained["root"])])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: --format engine: TensorRT needs an NVIDIA GPU with CUDA"
    )


@pytest.mark.parametrize(
    ("fmt", "cuda", "missing", "message"),
    [
        ("engine", False, set(), "TensorRT needs an NVIDIA GPU with CUDA"),
        ("engine", True, {"tensorrt"}, "pip install tensorrt"),
        ("openvino", False, {"openvino"}, "pip install openvino"),
        ("tflite", False, set(), "choose one of onnx, engine, openvino"),
    ],
)
def test_missing_exporters_give_an_install_hint(fmt, cuda, missing, message, monkeypatch):
    from autolabel.exported.options import check_exporter

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    with pytest.raises(AutolabelError, match=message):
        check_exporter(fmt, cuda_available=cuda)


def test_engine_with_cuda_and_tensorrt_passes_the_check(monkeypatch):
    from autolabel.exported.options import check_exporter

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else real(name, *a)
    )
    check_exporter("engine", cuda_available=True)


# -- pure parts ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "exp", "matched"),
    [
        ([], [], 0),
        ([(0, [0, 0, 10, 10])], [(0, [0, 0, 10, 10])], 1),
        ([(0, [0, 0, 10, 10])], [(1, [0, 0, 10, 10])], 0),  # same box, other class
        ([(0, [0, 0, 10, 10])], [(0, [0, 0, 10, 11])], 1),  # IoU 0.909
        ([(0, [0, 0, 10, 10])], [(0, [0, 0, 10, 12])], 0),  # IoU 0.833
        ([(0, [0, 0, 10, 10])], [(0, [0, 0, 10, 10]), (0, [0, 0, 10, 10.5])], 1),  # one-to-one
        ([(0, [0, 0, 10, 10]), (0, [20, 20, 30, 30])], [(0, [20, 20, 30, 30]), (0, [0, 0, 10, 10])], 2),
    ],
)
def test_match_boxes(ref, exp, matched):
    from autolabel.exported.parity import match_boxes

    def build(items):
        return dets.make([b for _, b in items], [c for c, _ in items]) if items else dets.empty()

    assert match_boxes(build(ref), build(exp)) == matched


@pytest.mark.parametrize(
    ("matched", "n_ref", "n_exp", "rate"), [(0, 0, 0, 1.0), (3, 4, 3, 0.75), (0, 2, 0, 0.0)]
)
def test_match_rate(matched, n_ref, n_exp, rate):
    from autolabel.exported.parity import match_rate

    assert match_rate(matched, n_ref, n_exp) == rate


def test_map_of_perfect_shifted_and_missing_predictions(tmp_path):
    from autolabel.exported.parity import ParityImage, map50_95

    labels = dets.make([[10, 10, 40, 50], [50, 20, 90, 60]], [0, 2])
    image = ParityImage(image_id=1, path=tmp_path / "a.png", width=100, height=100, labels=labels)
    perfect = dets.make(labels.xyxy, labels.class_id, [0.9, 0.8])
    assert map50_95(NAMES, [image], [perfect]) == pytest.approx(1.0)
    assert map50_95(NAMES, [image], [dets.empty()]) == 0.0
    shifted = dets.make(labels.xyxy + 6, labels.class_id, [0.9, 0.8])
    assert 0.0 < map50_95(NAMES, [image], [shifted]) < 1.0


def _run(id_, status="finished", map50_95=None, weights="w.pt"):
    metrics = {} if map50_95 is None else {"map50_95": map50_95}
    return runs.Run(id=id_, status=status, weights_path=weights, metrics=metrics)


@pytest.mark.parametrize(
    ("rows", "run_id", "expected"),
    [
        ([_run(1, map50_95=0.2), _run(2, map50_95=0.5), _run(3, map50_95=0.4)], None, 2),
        ([_run(1, map50_95=0.5), _run(2, map50_95=0.5)], None, 2),  # a tie goes to the later run
        ([_run(1, map50_95=0.2), _run(2, "failed", 0.9, None)], None, 1),
        ([_run(1, map50_95=0.2), _run(2, map50_95=0.5)], 1, 1),
        ([_run(1, map50_95=0.2), _run(2, "started", weights=None)], 2, "run 2 is started"),
        ([_run(1, map50_95=0.2)], 7, "no run 7 in this workspace"),
        ([], None, "no finished training run"),
    ],
)
def test_select_run(rows, run_id, expected):
    if isinstance(expected, int):
        assert runs.choose(rows, run_id).id == expected
    else:
        with pytest.raises(AutolabelError, match=expected):
            runs.choose(rows, run_id)


@pytest.mark.parametrize(
    ("options", "stem"),
    [
        ({}, "onnx-fp32"),
        ({"half": True, "dynamic": True}, "onnx-fp16-dynamic"),
        ({"format": "engine", "half": True, "nms": True}, "engine-fp16-nms"),
        ({"int8": True}, "onnx-int8"),
        ({"format": "engine", "int8": True}, "engine-int8"),
    ],
)
def test_each_variant_has_its_own_file_stem(options, stem):
    from autolabel.exported.options import ExportOptions

    assert ExportOptions(**options).stem == stem


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"half": True, "int8": True}, "exclude each other"),
        ({"format": "openvino", "int8": True}, "supported for onnx, engine, not openvino"),
    ],
)
def test_impossible_precisions_are_refused(options, message):
    from autolabel.exported.options import ExportOptions

    with pytest.raises(AutolabelError, match=message):
        ExportOptions(**options)


def test_int8_onnx_is_quantized_calibrated_on_training_images_and_keeps_names(trained, tmp_path):
    """Static INT8 through ultralytics + ONNX Runtime: Q/DQ nodes in the graph, names in metadata,
    a parity row that reports (is not held to) the mAP difference, and the card says int8."""
    import shutil

    import onnx
    import onnxruntime as ort

    from autolabel.cli.app import app

    root = tmp_path / "ws"
    shutil.copytree(trained["root"], root, ignore=shutil.ignore_patterns("exports"))
    result = CliRunner().invoke(app, ["export", "--format", "onnx", "--int8", "--workspace", str(root)])
    assert result.exit_code == 0, result.output
    out_dir = root / "exports" / str(trained["run_id"])
    path = out_dir / "onnx-int8.onnx"
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    calibration = sorted(p.name for p in (out_dir / "calibration" / "images" / "train").iterdir())
    assert len(calibration) == 9  # the labeled (training) images, never the frozen val set
    assert not any(name.endswith(("img03.png", "img07.png", "img11.png")) for name in calibration)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)})[0]
    assert out.shape == (1, 4 + len(NAMES), (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + 4)
    parity = json.loads((out_dir / "exports.json").read_text())["exports"]["onnx-int8.onnx"]["parity"]
    assert parity["names_exported"] == NAMES and parity["map_tolerance_points"] is None and parity["passed"]
    assert "| onnx-int8.onnx | onnx | int8 |" in (out_dir / "MODEL_CARD.md").read_text()


def test_fp16_onnx_on_cpu_has_half_weights_float_io_and_close_outputs(trained, tmp_path):
    """--half on a CPU: ultralytics converts the graph to fp16 and keeps float32 inputs/outputs;
    parity is reported against PyTorch fp32 (not held to the fp32 mAP tolerance)."""
    import shutil

    import onnx
    from onnx import TensorProto

    from autolabel.cli.app import app

    root = tmp_path / "ws"
    shutil.copytree(trained["root"], root, ignore=shutil.ignore_patterns("exports"))
    result = CliRunner().invoke(app, ["export", "--format", "onnx", "--half", "--workspace", str(root)])
    assert result.exit_code == 0, result.output
    out_dir = root / "exports" / str(trained["run_id"])
    graph = onnx.load(str(out_dir / "onnx-fp16.onnx")).graph
    weights = [init for init in graph.initializer if len(init.dims) == 4]  # conv kernels
    assert weights and all(init.data_type == TensorProto.FLOAT16 for init in weights)
    assert graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    parity = json.loads((out_dir / "exports.json").read_text())["exports"]["onnx-fp16.onnx"]["parity"]
    assert parity["names_exported"] == NAMES and parity["map_tolerance_points"] is None and parity["passed"]
    assert 0 < parity["max_abs_diff_scores"] < 1e-2  # fp16 rounding: not bit-equal, close
    assert "| onnx-fp16.onnx | onnx | fp16 |" in (out_dir / "MODEL_CARD.md").read_text()


# -- latency ------------------------------------------------------------------------------------
def test_interleaved_timing_uses_the_clock_per_call_after_warmup():
    from autolabel.latency import summarize, time_interleaved

    ticks = iter(np.arange(0, 1000, 0.001))
    calls = {"a": 0, "b": 0}

    def runner(name):
        def run():
            calls[name] += 1

        return run

    samples = time_interleaved(
        {"a": runner("a"), "b": runner("b")}, runs=7, warmup=2, blocks=3, clock=lambda: next(ticks)
    )
    assert calls == {"a": 9, "b": 9}
    assert [len(v) for v in samples.values()] == [7, 7]
    assert summarize(samples["a"])["median_ms"] == pytest.approx(1.0)
    stats = summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert stats["median_ms"] == 5.5 and stats["p90_ms"] == pytest.approx(9.1) and stats["min_ms"] == 1


def test_speedup_is_relative_to_pytorch_on_the_same_device_and_batch():
    from autolabel.latency import LatencyStats, with_speedups

    def row(backend, device, batch, median):
        return LatencyStats(
            backend=backend, device=device, file=None, batch=batch, imgsz=64, runs=5,
            median_ms=median, p90_ms=median, mean_ms=median, min_ms=median,
        )  # fmt: skip

    rows = with_speedups(
        [row("pytorch", "cpu", 1, 30.0), row("onnxruntime", "cpu", 1, 10.0), row("tensorrt", "cuda", 1, 2.0)]
    )
    assert [r.speedup for r in rows] == [1.0, 3.0, None]


def test_human_time_comes_from_the_recorded_label_studio_corrections(tmp_path):
    from autolabel.model_card import estimate_human_time, labels_summary
    from autolabel.store import Store
    from autolabel.studio import state as studio_state

    store = Store.open(tmp_path / "s.db")
    store.add_images([{"path": f"{i}.jpg", "sha256": str(i), "size_bytes": 1, "width": 9, "height": 9,
                       "source_group": "g"} for i in range(3)])  # fmt: skip
    for image in store.images():
        store.set_labels(image.id, "studio", dets.to_json(dets.make([[0, 0, 5, 5]], [0])))
    labels = labels_summary(store)
    assert estimate_human_time(store, labels)["seconds"] is None
    studio_state.ensure_schema(store)
    store.conn.execute(
        "INSERT INTO studio_projects(id, url, project_id, title, labels) VALUES (1, 'u', 1, 't', '[]')"
    )
    for image_id, rnd, seconds in [(1, 0, 3.6), (2, 0, 9.0), (3, 1, 2.0)]:
        store.conn.execute(
            "INSERT INTO studio_corrections(project, image_id, task_id, annotation_id, round, shown, human, kept,"
            " moved, relabeled, deleted, added, true_positives, clipped, rotated, seconds)"
            " VALUES (1, ?, ?, ?, ?, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, ?)",
            (image_id, image_id, image_id, rnd, seconds),
        )
    estimate = estimate_human_time(store, labels)
    assert estimate["seconds"] == pytest.approx(14.6) and estimate["images_reviewed"] == 3
    assert [r["round"] for r in estimate["per_round"]] == [0, 1]


def _report(**overrides):
    from autolabel.exported.parity import ParityReport

    values = {
        "images": 3, "image_source": "validation", "max_abs_diff": 1e-5, "max_abs_diff_scores": 1e-8, "conf": 0.25,
        "boxes_reference": 10, "boxes_exported": 10, "boxes_matched": 10, "match_rate": 1.0, "map50_95_reference": 0.5,
        "map50_95_exported": 0.499, "map_diff_points": 0.1, "map_tolerance_points": 0.3, "names_reference": NAMES,
        "names_exported": NAMES, "names_match": True,
    }  # fmt: skip
    return ParityReport(**{**values, **overrides})


@pytest.mark.parametrize(
    ("overrides", "passed"),
    [
        ({}, True),
        ({"map_diff_points": 0.31}, False),  # fp32 beyond 0.3 points
        ({"map_diff_points": 2.0, "map_tolerance_points": None}, True),  # fp16: reported, not held to it
        ({"names_exported": ["bolt", "washer", "nut"], "names_match": False}, False),
    ],
)
def test_parity_passes_on_names_and_the_fp32_map_tolerance(overrides, passed):
    assert _report(**overrides).passed is passed


def test_card_rows_for_nms_exports_and_unchecked_exports():
    from autolabel.model_card import render_markdown

    entry = {"format": "onnx", "options": {"half": False}, "size_bytes": 1}
    card = {
        "run_id": 4, "round": 2, "created_at": "now", "classes": NAMES, "imgsz": 640, "training": {},
        "validation_metrics": {}, "labels": {"by_source": {}, "images": 0, "boxes": 0}, "human_time": None,
        "lineage": {"train_hash": None, "val_hash": None, "n_train": None, "n_val": None},
        "exports": [
            {**entry, "file": "onnx-fp32-nms.onnx", "parity": _report(max_abs_diff=None).to_dict()},
            {**entry, "file": "onnx-fp32.onnx", "parity": None},
        ],
        "latency": None, "license": "AGPL-3.0",
    }  # fmt: skip
    text = render_markdown(card)
    assert "| onnx-fp32-nms.onnx | onnx | fp32 | n/a (NMS in graph) | 1.000 (10/10 at conf 0.25) |" in text
    assert "| onnx-fp32.onnx | onnx | fp32 | not checked |" in text
    assert "Not measured yet: run `autolabel bench`." in text


def test_openvino_export_matches_pytorch_keeps_names_and_is_timed(trained, tmp_path):
    """OpenVINO (optional): the folder ultralytics writes, parity through AutoBackend, names read
    back from its metadata, a card row, and a latency row next to PyTorch's."""
    pytest.importorskip("openvino")
    import shutil

    from autolabel.cli.app import app

    root = tmp_path / "ws"
    shutil.copytree(trained["root"], root, ignore=shutil.ignore_patterns("exports"))
    result = CliRunner().invoke(app, ["export", "--format", "openvino", "--workspace", str(root)])
    assert result.exit_code == 0, result.output
    out_dir = root / "exports" / str(trained["run_id"])
    exports = json.loads((out_dir / "exports.json").read_text())["exports"]
    (name,) = [n for n, e in exports.items() if e["format"] == "openvino"]
    folder = out_dir / name
    assert folder.is_dir() and list(folder.glob("*.xml")) and list(folder.glob("*.bin"))
    parity = exports[name]["parity"]
    assert parity["names_exported"] == NAMES and parity["passed"], parity
    assert parity["map_diff_points"] <= 0.3
    from autolabel.exported.runtimes import openvino_cpu_precision

    if openvino_cpu_precision() == "f32":
        assert parity["max_abs_diff"] < 1e-3
    else:  # bf16 CPUs: OpenVINO's default inference precision, said in the report
        assert any("OpenVINO runs this model in" in note for note in parity["notes"])
        assert parity["max_abs_diff_scores"] < 1e-2
    assert f"| {name} | openvino | fp32 |" in (out_dir / "MODEL_CARD.md").read_text()

    result = CliRunner().invoke(app, ["bench", "--runs", "5", "--warmup", "1", "--workspace", str(root)])
    assert result.exit_code == 0, result.output
    latency = json.loads((out_dir / "latency.json").read_text())
    rows = {r["backend"]: r for r in latency["rows"]}
    assert (
        set(rows) == {"pytorch", "openvino"}
        and 0 < rows["openvino"]["median_ms"] <= rows["openvino"]["p90_ms"]
    )
    assert latency["cpu_threads"] >= 1
