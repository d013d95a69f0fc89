"""export-labels and preview end to end on a workspace of generated images; boxes are put in the
store as data (pre-labels and human labels), then read back from the exported files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from autolabel import detections as dets
from autolabel.cli.app import app
from autolabel.formats import coco, yolo
from autolabel.formats.yolo import mirrored_paths as yolo_paths
from autolabel.workspace import Workspace
from tests.builders import rgb

runner = CliRunner()

# path -> (pre-label boxes, human-label boxes); None: none stored. Class ids: 0 bolt, 1 nut.
PREDICTED = {
    "a/img.jpg": dets.make([[1, 2, 30, 40], [50.5, 10.25, 96, 64]], [0, 1], [0.91, 0.42]),
    "b/img.jpg": dets.make([[0, 0, 96, 64]], [1], [0.77]),
    "b/pic.jpg": dets.empty(),
    "b/pic.png": dets.make([[10, 10, 20, 20]], [0], [0.5]),
}
LABELED = {
    "a/img.jpg": dets.make([[2, 3, 31, 41]], [0]),
    "c/human.jpg": dets.make([[5, 6, 60, 50], [0, 0, 10, 10]], [1, 0]),
}
VALIDATION = {"c/val.jpg": dets.make([[7, 8, 9, 10]], [1])}


@pytest.fixture()
def workspace(tmp_path) -> Path:
    raw = tmp_path / "raw"
    for seed, rel in enumerate(
        ["a/img.jpg", "b/img.jpg", "b/pic.jpg", "b/pic.png", "c/human.jpg", "c/val.jpg", "d/none.jpg"]
    ):
        rgb(raw / rel, width=96, height=64, seed=seed)
    (raw / "d" / "broken.jpg").write_bytes(b"not an image")
    ws_dir = tmp_path / "ws"
    result = runner.invoke(app, ["init", "--images", str(raw), "-w", str(ws_dir)])
    assert result.exit_code == 0, result.output
    ws = Workspace.load(ws_dir)
    with ws.open_store() as store:
        ids = {r.path: r.id for r in store.images(include_errors=True)}
        store.ensure_classes(["bolt", "nut"])
        store.save_predictions(
            (ids[path], "test-model", "test-model v1", dets.to_json(det), None)
            for path, det in PREDICTED.items()
        )
        # the broken file has a stored prediction too; its status 'error' still keeps it out
        store.save_predictions(
            [(ids["d/broken.jpg"], "test-model", "v1", dets.to_json(PREDICTED["b/img.jpg"]), None)]
        )
        for path, det in LABELED.items():
            store.set_labels(ids[path], "import", dets.to_json(det))
        for path, det in VALIDATION.items():
            store.set_labels(ids[path], "import", dets.to_json(det), status="validation")
        assert store.images(ids=[ids["d/broken.jpg"]], include_errors=True)[0].status == "error"
    return ws_dir


def export(workspace: Path, out: Path, *args: str):
    return runner.invoke(app, ["export-labels", "-w", str(workspace), "--out", str(out), *args])


def expected(source: str) -> dict[str, tuple]:
    """path -> (detections, came from labels?) for a --source choice."""
    out = {}
    if source in ("auto", "predictions"):
        out.update({p: (d, False) for p, d in PREDICTED.items()})
    if source in ("auto", "labels"):
        out.update({p: (d, True) for p, d in {**LABELED, **VALIDATION}.items()})
    return out


def assert_same(got, want, with_scores: bool):
    assert len(got) == len(want)
    if len(want):
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)
        assert got.class_id.tolist() == want.class_id.tolist()
        if with_scores:
            np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-5)
        else:
            assert got.confidence is None


@pytest.mark.parametrize("source", ["auto", "labels", "predictions"])
def test_yolo_export_reads_back(workspace, tmp_path, source):
    out = tmp_path / "yolo"
    result = export(workspace, out, "--format", "yolo", "--source", source)
    assert result.exit_code == 0, result.output
    want = expected(source)
    label_files = sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.txt"))
    image_files = sorted(
        p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*") if not p.is_dir()
    )
    assert len(label_files) == len(image_files) == len(want)
    stems = {p: yolo_paths([p])[0] for p in want}
    raw_root = Workspace.load(workspace).image_root
    for rel_image, (det, _) in want.items():
        image_path, label_path = yolo_paths([rel_image])[0]
        if rel_image == "b/pic.png":  # shares its stem with b/pic.jpg
            image_path, label_path = Path("images/b/pic_png.png"), Path("labels/b/pic_png.txt")
        link = out / image_path
        assert link.is_symlink() and link.resolve() == (raw_root / rel_image).resolve()
        back = yolo.from_lines((out / label_path).read_text().splitlines(), 96, 64)
        assert_same(back, det, with_scores=False)
    assert stems  # all paths mapped
    assert not any("broken" in p or "none" in p for p in image_files)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "bolt", 1: "nut"} and data["nc"] == 2
    assert Path(data["path"]) == out.resolve() and data["train"] == "images"


def test_yolo_layout_is_what_ultralytics_expects(workspace, tmp_path):
    from ultralytics.data.utils import img2label_paths

    out = tmp_path / "yolo"
    assert export(workspace, out, "--format", "yolo").exit_code == 0
    images = sorted(str(p) for p in (out / "images").rglob("*.*"))
    for label in img2label_paths(images):
        assert Path(label).is_file(), label


def test_yolo_status_filter_scores_and_rerun(workspace, tmp_path):
    out = tmp_path / "yolo"
    result = export(workspace, out, "--format", "yolo", "--status", "proposed", "--with-scores")
    assert result.exit_code == 0, result.output
    # a/img.jpg is 'labeled' now; proposed: b/img.jpg, b/pic.jpg, b/pic.png
    labels = {p.relative_to(out / "labels").as_posix(): p for p in (out / "labels").rglob("*.txt")}
    assert set(labels) == {"b/img.txt", "b/pic.txt", "b/pic_png.txt"}
    assert labels["b/pic.txt"].read_text() == ""
    back = yolo.from_lines(labels["b/img.txt"].read_text().splitlines(), 96, 64)
    assert_same(back, PREDICTED["b/img.jpg"], with_scores=True)
    # a rerun into the same folder replaces the earlier export
    result = export(workspace, out, "--format", "yolo", "--status", "labeled,validation")
    assert result.exit_code == 0, result.output
    labels = sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.txt"))
    assert labels == ["a/img.txt", "c/human.txt", "c/val.txt"]
    assert "3 images, 4 boxes (3 from labels, 0 from pre-labels)" in result.output


@pytest.mark.parametrize("source", ["auto", "predictions"])
def test_coco_export_reads_back(workspace, tmp_path, source):
    out = tmp_path / "coco"
    result = export(workspace, out, "--format", "coco", "--source", source)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["bolt", "nut"]
    by_id = coco.image_detections(data)
    files = {im["file_name"]: im for im in data["images"]}
    want = expected(source)
    assert set(files) == set(want)
    for rel, (det, human) in want.items():
        image = files[rel]
        assert (image["width"], image["height"]) == (96, 64)
        assert_same(by_id[image["id"]], det, with_scores=not human and len(det) > 0)
    assert (
        Path(data["info"]["image_root"]) / "a/img.jpg" == Workspace.load(workspace).image_root / "a/img.jpg"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "yolo", "--status", "error"], "never exported"),
        (["--format", "yolo", "--status", "done"], "unknown status done"),
        (["--format", "voc"], "--format voc"),
        (["--format", "coco", "--source", "guess"], "--source guess"),
        (["--format", "coco", "--status", "unlabeled"], "nothing to export"),
    ],
)
def test_export_errors_are_one_line(workspace, tmp_path, args, message):
    result = export(workspace, tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_export_refuses_to_clear_a_folder_it_did_not_write(workspace, tmp_path):
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    (out / "images" / "keep.txt").write_text("mine")
    result = export(workspace, out, "--format", "yolo")
    assert result.exit_code == 2 and "not an earlier export" in result.output
    assert (out / "images" / "keep.txt").read_text() == "mine"


def test_preview_writes_grid_png(workspace, tmp_path):
    out = tmp_path / "p" / "grid.png"
    result = runner.invoke(
        app, ["preview", "-w", str(workspace), "--n", "3", "--out", str(out), "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG"
        # 3 tiles: 2 columns x 2 rows of 320 px tiles, each with a 16 px title strip
        assert image.size == (640, 2 * (320 + 16))
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # images were drawn, not only the background


def test_preview_status_selection_default_path_and_seed(workspace, tmp_path):
    args = ["preview", "-w", str(workspace), "--status", "validation", "--n", "16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert path == Workspace.load(workspace).root / "preview.png"
    with Image.open(path) as image:
        assert image.size == (320, 336)  # only c/val.jpg is in validation
    for seed in ("0", "0", "5"):
        out = tmp_path / f"seed{seed}.png"
        runner.invoke(app, ["preview", "-w", str(workspace), "--n", "2", "--seed", seed, "--out", str(out)])
    same = np.asarray(Image.open(tmp_path / "seed0.png"))
    assert same.shape == np.asarray(Image.open(tmp_path / "seed5.png")).shape
    result = runner.invoke(app, ["preview", "-w", str(workspace), "--status", "unlabeled"])
    assert result.exit_code == 2 and "nothing to preview" in result.output


@pytest.mark.parametrize(
    "paths, expected_images",
    [
        (["a/x.jpg", "b/x.jpg"], ["images/a/x.jpg", "images/b/x.jpg"]),
        (["x.jpg", "x.png", "x.JPG"], ["images/x.jpg", "images/x_png.png", "images/x_JPG.JPG"]),
        (["deep/er/f.tif"], ["images/deep/er/f.tif"]),
    ],
)
def test_yolo_paths_are_unique(paths, expected_images):
    pairs = yolo_paths(paths)
    assert [p.as_posix() for p, _ in pairs] == expected_images
    labels = [label.as_posix() for _, label in pairs]
    assert len({label.lower() for label in labels}) == len(labels)
    assert all(label.startswith("labels/") and label.endswith(".txt") for label in labels)
