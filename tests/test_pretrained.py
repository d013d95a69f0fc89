"""The fine-tuning regime users run: a COCO-pretrained YOLO11n fine-tuned on a few real BCCD images.

The checkpoint is ``../shared/weights/yolo11n-coco.pt`` (AGPL-3.0, read from ../shared, never
copied into the project). The same few epochs on the same images from ``yolo11n.yaml`` (random
init) find nothing: pretrained weights are what make small label budgets work at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.shared_data import BCCD, COCO_YOLO11N, require

N_TRAIN, N_VAL, IMGSZ, EPOCHS = 16, 8, 320, 3


def bccd_workspace(root: Path):
    from autolabel import detections as dets
    from autolabel.config import WorkspaceConfig
    from autolabel.formats import yolo
    from autolabel.registry import register_images
    from autolabel.workspace import Workspace

    images = root / "images"
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        (images / split).mkdir(parents=True)
        for source in sorted((BCCD / "images" / split).iterdir())[:n]:
            shutil.copy2(source, images / split / source.name)  # links out of the image folder are refused
    ws = Workspace.create(root / "ws", WorkspaceConfig(images=str(images)))
    store = ws.open_store()
    store.ensure_classes(["RBC", "WBC", "Platelets"])
    register_images(store, ws.image_root, ws.config.grouping)
    for image in store.images():
        split, name = image.path.split("/")
        lines = (BCCD / "labels" / split / name).with_suffix(".txt").read_text().splitlines()
        det = yolo.from_lines(lines, image.width, image.height)
        store.set_labels(
            image.id, "import", dets.to_json(det), status="validation" if split == "val" else "labeled"
        )
    return ws, store


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, torch_one_thread):
    require(COCO_YOLO11N, BCCD)
    from autolabel.evaluate import evaluate_run
    from autolabel.train import TrainSettings, train_student

    ws, store = bccd_workspace(tmp_path_factory.mktemp("pretrained"))
    runs = {}
    for name, model in (("pretrained", str(COCO_YOLO11N)), ("scratch", "yolo11n.yaml")):
        settings = TrainSettings(
            model=model,
            epochs=EPOCHS,
            imgsz=IMGSZ,
            batch=8,
            workers=0,
            device="cpu",
            deterministic=False,
            val_each_epoch=False,
            plots=False,
        )
        runs[name] = train_student(ws, store, settings)
        evaluate_run(ws, store, runs[name], conf=settings.conf, iou=settings.iou)  # as 'autolabel train'
    yield ws, store, runs
    store.close()


def _metrics(store, run_id: int) -> dict:
    from autolabel import runs

    return runs.get(store, run_id).metrics


def test_pretrained_student_detects_where_scratch_does_not(fine_tuned):
    _, store, runs = fine_tuned
    pretrained, scratch = _metrics(store, runs["pretrained"]), _metrics(store, runs["scratch"])
    assert pretrained["n_images"] == scratch["n_images"] == N_VAL
    # measured at these settings: pretrained 0.017, scratch 0.000 (16 images, 3 epochs)
    assert pretrained["map50"] > 0.005, pretrained["map50"]
    assert scratch["map50"] < 0.001, scratch["map50"]


def test_status_and_model_card_say_which_weights_a_run_started_from(fine_tuned):
    from autolabel import runs as run_registry
    from autolabel.model_card import build_card, render_markdown
    from autolabel.status import training_runs

    _ws, store, runs = fine_tuned
    by_id = {r["id"]: r for r in training_runs(store)}
    assert by_id[runs["pretrained"]]["started_from"] == "yolo11n-coco.pt (pretrained)"
    assert by_id[runs["pretrained"]]["pretrained"] is True
    assert by_id[runs["scratch"]]["started_from"] == "yolo11n.yaml (random init)"
    run = run_registry.get(store, runs["pretrained"])
    card = build_card(
        run=run,
        class_names=store.class_names(),
        imgsz=IMGSZ,
        exports={},
        latency=None,
        labels={"images": 0, "boxes": 0, "by_source": {}},
        human_time=None,
    )
    assert card["started_from"] == "yolo11n-coco.pt (pretrained)"
    assert "- Started from: yolo11n-coco.pt (pretrained)" in render_markdown(card)
    assert str(COCO_YOLO11N.parent) not in json.dumps(card)  # a name, never the path


def test_cold_start_embeds_the_pool_with_the_pretrained_backbone(tmp_path, torch_one_thread):
    require(COCO_YOLO11N, BCCD)
    from dataclasses import replace

    from autolabel.loop import batch_ids, ensure_loop_schema
    from autolabel.loop_steps import RoundContext, step_select
    from autolabel.recipe import Recipe

    ws, store = bccd_workspace(tmp_path)
    pool = store.images(status="labeled")  # a fresh pool: no labels, no student yet
    for image in pool:
        store.conn.execute("DELETE FROM labels WHERE image_id = ?", (image.id,))
    store.conn.commit()
    store.set_status([im.id for im in pool], "unlabeled")
    ensure_loop_schema(store)
    logs: list[str] = []
    recipe = Recipe(
        initial_budget=4, budget=4, strategy="hybrid", train={"model": str(COCO_YOLO11N), "imgsz": 160}
    )
    ctx = RoundContext(store=store, recipe=recipe, log=logs.append, workspace=ws)
    result = step_select(ctx, 0)
    assert result["strategy"] == "typicality" and result["n"] == 4
    assert any("backbone of yolo11n-coco.pt" in m for m in logs), logs
    picked = batch_ids(store, 0)
    assert len(set(picked)) == 4 and set(picked) <= {im.id for im in pool}

    # without pretrained weights the same cold start falls back to the cheap pixel embeddings
    store.conn.execute("DELETE FROM loop_batches")
    store.conn.commit()
    logs.clear()
    ctx = replace(
        ctx,
        recipe=recipe.model_copy(update={"train": recipe.train.model_copy(update={"model": "yolo11n.yaml"})}),
    )
    assert step_select(ctx, 0)["strategy"] == "typicality"
    assert not any("backbone" in m for m in logs)
    store.close()
