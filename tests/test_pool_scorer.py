"""PoolScorer on a real tiny YOLO11n (random weights, built from its config) and generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel import detections as dets
from autolabel.sampling import uncertainty
from autolabel.sampling.scorer import ROW_KEYS, PoolScorer, ScorerSettings, score_pool

NUM_CLASSES = 3
SETTINGS = ScorerSettings(imgsz=64, conf=0.25, max_det=10, device="cpu")


def build_tiny_yolo(directory: Path, num_classes: int = NUM_CLASSES, seed: int = 0) -> Path:
    """yolo11n with ``num_classes`` classes and random weights, saved as a .pt checkpoint.

    PyTorch's default init shrinks activations ~1e9-fold through the 23 layers and the head's
    prior bias keeps every class score near 1e-5, so nothing would be detected. One forward pass
    in train mode on random images sets each BatchNorm's statistics (unit-scale activations), and
    the class logits are scaled down so scores spread over (0, 1): still random weights, but a
    model whose boxes, scores and features vary with the image.
    """
    import torch
    import ultralytics
    import yaml
    from ultralytics import YOLO

    from autolabel.runtime import configure_ultralytics

    configure_ultralytics()
    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/11/yolo11.yaml").read_text())
    cfg["nc"] = num_classes
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "yolo11n.yaml"  # the name carries the scale (n)
    config.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(seed)
    model = YOLO(str(config))
    net = model.model
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(seed)))
    net.eval()
    for branch in net.model[-1].cv3:
        branch[-1].weight.data *= 0.01
        torch.nn.init.zeros_(branch[-1].bias)
    weights = directory / "tiny.pt"
    model.save(str(weights))
    return weights


def write_image(path: Path, height: int, width: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (250, 30, 30)  # a bright patch
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return build_tiny_yolo(tmp_path_factory.mktemp("tiny-yolo"))


@pytest.fixture(scope="module")
def scorer(weights) -> PoolScorer:
    return PoolScorer(weights, SETTINGS)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("pool")
    good = [write_image(root / f"img{i}.png", 48 + 8 * i, 64, seed=i) for i in range(3)]
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    paths = [good[0], root / "broken.jpg", good[1], root / "empty.png", root / "missing.png", good[2]]
    return [{"id": 100 + i, "path": str(p)} for i, p in enumerate(paths)]


GOOD_IDS = [100, 102, 105]
BAD_IDS = {101: "", 103: "empty file", 104: "file not found"}


@pytest.fixture(scope="module")
def scored(scorer, rows) -> list[dict]:
    return list(score_pool(scorer, rows, batch_size=4))


def test_rows_keep_order_and_the_row_contract(scored, rows):
    assert [r["id"] for r in scored] == [r["id"] for r in rows]
    assert all(tuple(r) == ROW_KEYS for r in scored)


def test_bad_files_become_error_rows(scored):
    by_id = {r["id"]: r for r in scored}
    for image_id, reason in BAD_IDS.items():
        row = by_id[image_id]
        assert row["error"] and reason in row["error"]
        assert row["scores"] is None and row["embedding"] is None and row["detections"] is None


def test_good_rows_have_scores_detections_and_a_unit_embedding(scored, rows):
    by_id = {r["id"]: r for r in scored}
    sizes = {r["id"]: Image.open(r["path"]).size for r in rows if r["id"] in GOOD_IDS}
    expected_keys = {f"{m}_{h}" for m in uncertainty.METHODS for h in uncertainty.AGGREGATIONS}
    total_boxes = 0
    for image_id in GOOD_IDS:
        row = by_id[image_id]
        assert row["error"] is None
        assert set(row["scores"]) == expected_keys | {"instability", "boxes"}
        assert 0.0 <= row["scores"]["instability"] <= 1.0
        embedding = np.asarray(row["embedding"])
        assert embedding.shape == (256,)  # yolo11n's last backbone layer (C2PSA) has 256 channels
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
        det = dets.from_dict(row["detections"])
        width, height = sizes[image_id]
        assert len(det) == row["scores"]["boxes"] <= SETTINGS.max_det
        assert (det.confidence >= SETTINGS.conf).all()
        assert ((det.class_id >= 0) & (det.class_id < NUM_CLASSES)).all()
        assert (det.xyxy[:, [0, 2]] <= width + 0.01).all() and (det.xyxy[:, [1, 3]] <= height + 0.01).all()
        total_boxes += len(det)
    assert total_boxes > 0  # the scores above were computed over real boxes
    embeddings = np.array([by_id[i]["embedding"] for i in GOOD_IDS])
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-3)  # different images, different features


def test_scoring_is_deterministic_and_independent_of_batching(scorer, rows, scored):
    again = list(score_pool(scorer, rows, batch_size=1))
    for first, second in zip(scored, again):
        assert first["error"] == second["error"]
        if first["error"] is None:
            np.testing.assert_allclose(first["embedding"], second["embedding"], atol=1e-4)
            assert first["detections"]["class_id"] == second["detections"]["class_id"]
            np.testing.assert_allclose(first["detections"]["xyxy"], second["detections"]["xyxy"], atol=0.05)
            for key, value in first["scores"].items():
                assert second["scores"][key] == pytest.approx(value, abs=1e-3), key


def test_per_class_scores_come_from_the_kept_boxes(scorer):
    image = np.asarray(
        Image.open(write_image(Path(scorer.student.model.ckpt_path).parent / "x.png", 64, 64, 9))
    )
    s = SETTINGS
    (result,) = scorer.student._predict_scored(
        [image], conf=s.conf, iou=s.iou, imgsz=s.imgsz, max_det=s.max_det, device=scorer.device
    )
    probs = result.class_probs
    assert probs.shape == (len(result.boxes), NUM_CLASSES)
    # NMS keeps each box's best class: its confidence is the max of its class scores
    np.testing.assert_allclose(probs.max(axis=1), result.boxes.conf.numpy(), atol=1e-6)
    np.testing.assert_array_equal(probs.argmax(axis=1), result.boxes.cls.numpy().astype(int))


def test_progress_advances_per_batch(scorer, rows):
    advanced: list[int] = []
    list(score_pool(scorer, rows, batch_size=4, advance=advanced.append))
    assert advanced == [4, 2]
    with pytest.raises(ValueError, match="batch_size"):
        list(score_pool(scorer, rows, batch_size=0))


def test_ray_style_column_batches(scorer, rows):
    batch = {"id": [r["id"] for r in rows[:2]], "path": [r["path"] for r in rows[:2]]}
    columns = scorer(batch)
    assert list(columns) == list(ROW_KEYS)
    assert columns["id"] == batch["id"]
    assert columns["error"][0] is None and columns["error"][1]


def test_without_flip_and_embedding(weights, rows):
    plain = PoolScorer(weights, ScorerSettings(imgsz=64, conf=0.25, device="cpu", flip=False, embed=False))
    (row,) = plain.map_rows(rows[:1])
    assert row["error"] is None and row["embedding"] is None
    assert "instability" not in row["scores"]


def test_the_students_embed_is_the_scorers_embedding(scorer, rows, scored):
    """``Student.embed`` (features only) gives the vectors the scorer stores from its scoring pass."""
    from autolabel.images import decode

    by_id = {r["id"]: r for r in scored}
    images = [decode(r["path"]).pixels for r in rows if r["id"] in GOOD_IDS]
    vectors = scorer.student.embed(images, imgsz=SETTINGS.imgsz, device="cpu")
    assert vectors.shape == (len(GOOD_IDS), 256)
    expected = np.array([by_id[i]["embedding"] for i in GOOD_IDS])
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
