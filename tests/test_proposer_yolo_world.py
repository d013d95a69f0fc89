"""yolo-world backend: pure postprocess tables, and real forwards of YOLOE / YOLO-World built from
their Ultralytics configs (random weights) with random prompt embeddings as input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autolabel.errors import AutolabelError
from autolabel.ontology import Ontology, OntologyClass
from autolabel.proposers import build_proposer
from autolabel.proposers.base import FinalizeOptions, ProposerSettings
from autolabel.proposers.yolo_world import (
    RawDetections,
    embeddings_path_for,
    load_prompt_embeddings,
    raw_to_detections,
    save_prompt_embeddings,
)

ONTOLOGY = Ontology(
    classes=(
        OntologyClass("bolt", ("bolt", "hex bolt")),
        OntologyClass("nut", ("nut",), box_threshold=0.6),
        OntologyClass("washer", ("washer", "flat washer")),
    )
)
# prompt index -> class: bolt, hex bolt -> 0; nut -> 1; washer, flat washer -> 2
PROMPT_CLASSES = np.array([c for _, c in ONTOLOGY.prompt_table()])


def raw(rows: list[tuple[float, float, float, float, float, int]]) -> RawDetections:
    array = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    return RawDetections(xyxy=array[:, :4], scores=array[:, 4], prompt_index=array[:, 5].astype(int))


def post(rows, *, default=0.3, max_det=100, nms_iou=None, agnostic=False, size=(100, 80)):
    return raw_to_detections(
        raw(rows),
        PROMPT_CLASSES,
        FinalizeOptions(
            thresholds=tuple(ONTOLOGY.thresholds(default)),
            max_det=max_det,
            nms_iou=nms_iou,
            class_agnostic_nms=agnostic,
        ),
        width=size[0],
        height=size[1],
    )


def test_prompt_table_maps_prompt_indices_to_classes():
    assert ONTOLOGY.prompt_table() == [
        ("bolt", 0),
        ("hex bolt", 0),
        ("nut", 1),
        ("washer", 2),
        ("flat washer", 2),
    ]


@pytest.mark.parametrize(
    "rows, expected_classes, expected_scores",
    [
        ([], [], []),
        # each prompt index lands on its class
        (
            [
                (0, 0, 10, 10, 0.9, 0),
                (20, 20, 30, 30, 0.8, 1),
                (40, 40, 50, 50, 0.7, 3),
                (60, 0, 70, 10, 0.65, 4),
            ],
            [0, 0, 2, 2],
            [0.9, 0.8, 0.7, 0.65],
        ),
        # 'nut' has its own 0.6 threshold; bolt uses the default 0.3
        (
            [(0, 0, 10, 10, 0.5, 2), (20, 20, 30, 30, 0.35, 0), (40, 40, 50, 50, 0.61, 2)],
            [0, 1],
            [0.35, 0.61],
        ),
        ([(0, 0, 10, 10, 0.29, 0)], [], []),
        # two prompts of one class on the same object merge into the better box
        ([(0, 0, 20, 20, 0.5, 0), (1, 1, 20, 20, 0.9, 1)], [0], [0.9]),
        # ... but boxes of different classes on one object both stay without cross-class NMS
        ([(0, 0, 20, 20, 0.7, 0), (1, 1, 20, 20, 0.9, 2)], [0, 1], [0.7, 0.9]),
    ],
)
def test_postprocess_table(rows, expected_classes, expected_scores):
    det = post(rows)
    assert len(det) == len(expected_classes)
    got = sorted(zip(det.class_id.tolist(), np.round(det.confidence, 3).tolist()), key=lambda t: -t[1])
    want = sorted(zip(expected_classes, expected_scores), key=lambda t: -t[1])
    assert [c for c, _ in got] == [c for c, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-3)


def test_postprocess_cross_class_nms_max_det_and_clipping():
    rows = [
        (0, 0, 20, 20, 0.7, 0),
        (1, 1, 20, 20, 0.9, 2),
        (50, 50, 60, 60, 0.8, 0),
        (90, 70, 130, 95, 0.95, 3),
    ]
    det = post(rows, nms_iou=0.5, agnostic=True)
    assert sorted(det.confidence.astype(float).round(2).tolist()) == [0.8, 0.9, 0.95]
    clipped = det[det.class_id == 2]
    assert clipped.xyxy.max(axis=0)[2] <= 100 and clipped.xyxy.max(axis=0)[3] <= 80
    top = post(rows, max_det=2)
    assert sorted(top.confidence.astype(float).round(2).tolist()) == [0.9, 0.95]


def test_embeddings_file_rows_follow_prompts(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = save_prompt_embeddings(tmp_path / "w.prompts.npz", ["Nut", "bolt", "washer"], vectors)
    rows = load_prompt_embeddings(path, ["bolt", "washer", "nut"])
    assert rows.shape == (1, 3, 4)
    np.testing.assert_array_equal(rows[0], vectors[[1, 2, 0]])
    with pytest.raises(AutolabelError, match="no embeddings for prompts \\['screw'\\]"):
        load_prompt_embeddings(path, ["bolt", "screw"])
    assert embeddings_path_for("/m/yoloe-v8s.pt") == Path("/m/yoloe-v8s.prompts.npz")


def test_missing_weights_offline_is_one_line_error(tmp_path):
    settings = ProposerSettings(
        model="yolo-world", model_path=str(tmp_path / "missing" / "world.pt"), device="cpu"
    )
    with pytest.raises(AutolabelError, match="file not found"):
        build_proposer(settings, ONTOLOGY)


def test_default_weights_offline_names_file_and_model_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutolabelError) as info:
        build_proposer(ProposerSettings(model="yolo-world", device="cpu"), ONTOLOGY)
    message = str(info.value)
    assert "yolov8s-worldv2.pt" in message and "--model-path" in message and "\n" not in message


def test_prompts_without_embeddings_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = ProposerSettings(model="yolo-world", model_path="yolov8n-worldv2.yaml", device="cpu")
    with pytest.raises(AutolabelError, match="yolov8n-worldv2.prompts.npz"):
        build_proposer(settings, ONTOLOGY)


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 255, (120, 160, 3), dtype=np.uint8),
        rng.integers(0, 255, (90, 70, 3), dtype=np.uint8),
    ]


@pytest.mark.parametrize("config", ["yoloe-v8n.yaml", "yolov8n-worldv2.yaml"])
def test_real_forward_from_config_with_given_embeddings(tmp_path, config):
    import torch

    from autolabel.proposers.yolo_world import YoloWorldProposer

    torch.manual_seed(0)  # the random init is part of the test input: fix it, whatever ran before

    prompts = [p for p, _ in ONTOLOGY.prompt_table()]
    vectors = np.random.default_rng(1).standard_normal((len(prompts), 512)).astype(np.float32)
    embeddings = save_prompt_embeddings(tmp_path / "random.npz", prompts[::-1], vectors[::-1])
    settings = ProposerSettings(
        model="yolo-world", model_path=config, device="cpu", box_threshold=0.0, max_det=7, max_side=160
    )
    proposer = YoloWorldProposer(settings, ONTOLOGY, prompt_embeddings=embeddings)
    assert proposer.model.names in (prompts, dict(enumerate(prompts)))
    batch = images()
    outputs = proposer.forward(proposer.preprocess(batch))
    assert len(outputs) == 2
    for out in outputs:
        assert out.prompt_index.min(initial=0) >= 0 and out.prompt_index.max(initial=0) < len(prompts)
    results = proposer.postprocess(outputs, [(im.shape[0], im.shape[1]) for im in batch])
    assert any(len(det) for det in results)
    for det, image, out in zip(results, batch, outputs):
        height, width = image.shape[:2]
        assert len(det) <= 7
        assert det.xyxy.dtype == np.float32 and det.xyxy.shape[1] == 4
        assert (det.xyxy[:, [0, 2]] >= 0).all() and (det.xyxy[:, [0, 2]] <= width).all()
        assert (det.xyxy[:, [1, 3]] >= 0).all() and (det.xyxy[:, [1, 3]] <= height).all()
        assert set(det.class_id.tolist()) <= set(PROMPT_CLASSES[out.prompt_index].tolist())
        assert ((det.confidence >= 0) & (det.confidence <= 1)).all()
    # thresholds act on the real scores: a threshold just above the best score keeps nothing
    best = max(float(det.confidence.max()) for det in results if len(det))
    strict = ProposerSettings(
        model="yolo-world", model_path=config, device="cpu", box_threshold=min(best + 1e-4, 1.0)
    )
    proposer.finalize_options = replace(
        proposer.finalize_options, thresholds=tuple(ONTOLOGY.thresholds(strict.box_threshold))
    )
    assert all(len(det) == 0 for det in proposer.predict(batch))


def test_propose_cli_end_to_end_with_yoloe_config(tmp_path):
    """`autolabel propose --model yolo-world` on generated images, weights = a YOLOE config with
    random weights, prompts = random embeddings stored next to it (found by name)."""
    import shutil

    import ultralytics
    from typer.testing import CliRunner

    from autolabel import detections as dets
    from autolabel.cli.app import app
    from autolabel.workspace import Workspace
    from tests.builders import rgb

    for i in range(3):
        rgb(tmp_path / "raw" / f"{i}.jpg", width=80 + 16 * i, height=64, seed=i)
    config = tmp_path / "models" / "yoloe-v8n.yaml"
    config.parent.mkdir()
    shutil.copy(Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yoloe-v8.yaml", config)
    prompts = ["bolt", "hex bolt", "nut"]
    vectors = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    save_prompt_embeddings(embeddings_path_for(config), prompts, vectors)
    runner = CliRunner()
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", "--images", str(tmp_path / "raw"), "-w", str(ws)]).exit_code == 0
    args = [
        "propose",
        "-w",
        str(ws),
        "--model",
        "yolo-world",
        "--model-path",
        str(config),
        "--prompt",
        "bolt=bolt,hex bolt",
        "--prompt",
        "nut",
        "--box-threshold",
        "0",
        "--max-det",
        "5",
        "--device",
        "cpu",
        "--preview",
        "0",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = Workspace.load(ws).open_store()
    names = store.class_names()
    predictions = store.latest_predictions()
    assert len(predictions) == 3 and set(names) >= {"bolt", "nut"}
    for image in store.images():
        det = dets.from_json(predictions[image.id][1])
        assert 0 < len(det) <= 5
        assert set(det.class_id.tolist()) <= {names.index("bolt"), names.index("nut")}
        assert (det.xyxy[:, 2] <= image.width).all() and (det.xyxy[:, 3] <= image.height).all()
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert store.latest_predictions() == predictions  # resumed: nothing proposed again
    store.close()
