from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel import check
from autolabel import detections as dets
from autolabel.cli.app import app
from autolabel.formats import yolo
from autolabel.synthetic import generate_dataset, generate_scene

runner = CliRunner()


@pytest.mark.parametrize(
    "box, class_id, expected",
    [
        ([10, 10, 30, 40], 0, []),
        ([0, 0, 100, 80], 3, []),  # touching every edge is fine
        ([10, 10, 30, 40], 4, ["unknown class"]),
        ([10, 10, 30, 40], -1, ["unknown class"]),
        ([10, 10, 10.5, 40], 1, ["degenerate box"]),
        ([-5, 10, 30, 40], 1, ["out of range"]),
        ([10, 10, 30, 81], 1, ["out of range"]),
        ([90, 70, 120, 100], 9, ["unknown class", "out of range"]),
    ],
)
def test_box_findings(box, class_id, expected):
    found = check.box_findings(dets.make([box], [class_id]), 100, 80, n_classes=4)
    assert [problem for problem, _ in found] == expected


def _rewrite_labels(labels: Path, size: int, mode: str) -> None:
    """Rewrite correct YOLO files the way a buggy converter would."""
    for label in labels.rglob("*.txt"):
        det = yolo.from_lines(label.read_text().splitlines(), size, size)
        lines = []
        for (x1, y1, x2, y2), cid in zip(det.xyxy / size, det.class_id):
            w, h = x2 - x1, y2 - y1
            if mode == "corner-as-centre":  # top-left corner written in the cx cy slots
                lines.append(f"{cid} {x1:.6f} {y1:.6f} {w:.6f} {h:.6f}")
            else:  # centre x y treated as a corner and re-centred: everything moves down-right
                lines.append(f"{cid} {x2:.6f} {y2:.6f} {w:.6f} {h:.6f}")
        label.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def synthetic_yolo(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    generate_dataset(root, n=12, seed=5, imgsz=128, groups=3)
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_correct_labels_pass(synthetic_yolo, tmp_path):
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["check", "labels", "--labels", str(synthetic_yolo / "labels"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output and out.is_file()


@pytest.mark.parametrize("mode, direction", [("corner-as-centre", "up-left"), ("reverse", "down-right")])
def test_shifted_label_format_is_caught(synthetic_yolo, tmp_path, mode, direction):
    root = _copy(synthetic_yolo, tmp_path / "bad")
    _rewrite_labels(root / "labels", 128, mode)
    items = check.items_from_yolo(root / "labels", root / "images")
    result = check.check_labels(items, ["bolt", "nut", "washer", "screw"], n=4, out=tmp_path / "g.png")
    shifted = {f.image for f in result.findings if f.problem == "shifted labels"}
    assert len(shifted) >= 0.75 * len(items)
    assert any(direction in f.detail for f in result.findings if f.problem == "shifted labels")
    assert any("look shifted" in note for note in result.notes)
    cli = runner.invoke(
        app, ["check", "labels", "--labels", str(root / "labels"), "--out", str(tmp_path / "c.png")]
    )
    assert cli.exit_code == 1 and "shifted labels" in cli.output


def test_content_offset_is_zero_for_exact_boxes_and_half_for_shifted_ones():
    offsets, shifted = [], []
    for seed in range(10):
        rgb, det = generate_scene(np.random.default_rng(seed), 160)
        if len(det) == 0:
            continue
        offsets.append(check.content_offset(rgb, det))
        w = det.xyxy[:, 2] - det.xyxy[:, 0]
        h = det.xyxy[:, 3] - det.xyxy[:, 1]
        moved = det.xyxy - np.stack([w / 2, h / 2, w / 2, h / 2], axis=1)
        shifted.append(check.content_offset(rgb, dets.make(moved, det.class_id)))
    assert all(abs(dx) < 0.2 and abs(dy) < 0.2 for dx, dy in offsets)
    assert np.median([dx + dy for dx, dy in shifted]) > 0.5


def test_unknown_class_ids_in_a_yolo_folder(synthetic_yolo, tmp_path):
    root = _copy(synthetic_yolo, tmp_path / "ids")
    first = min((root / "labels").rglob("*.txt"))
    first.write_text(first.read_text().replace("\n", "\n", 1) + "7 0.5 0.5 0.1 0.1\n")
    result = runner.invoke(
        app, ["check", "labels", "--labels", str(root / "labels"), "--out", str(tmp_path / "g.png")]
    )
    assert result.exit_code == 1
    assert "unknown class" in result.output and "class id 7" in result.output


def test_check_workspace_labels_round_trip(synthetic_yolo, tmp_path):
    ws = tmp_path / "ws"
    images = _copy(synthetic_yolo / "images", tmp_path / "photos")
    assert runner.invoke(app, ["init", "--images", str(images), "-w", str(ws)]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "import",
            "--labels",
            str(synthetic_yolo / "labels"),
            "--format",
            "yolo",
            "--add-classes",
            "-w",
            str(ws),
        ],
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "check.png"
    result = runner.invoke(app, ["check", "labels", "--n", "4", "--out", str(out), "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "checked 12 images" in result.output
    from PIL import Image

    assert Image.open(out).size == (640, 672)  # 2x2 tiles of 320 px under a 16 px title each


def test_check_needs_labels(tmp_path):
    ws = tmp_path / "ws"
    (tmp_path / "photos").mkdir()
    assert runner.invoke(app, ["init", "--images", str(tmp_path / "photos"), "-w", str(ws)]).exit_code == 0
    result = runner.invoke(app, ["check", "labels", "-w", str(ws)])
    assert result.exit_code == 2 and "no labeled images" in result.output
