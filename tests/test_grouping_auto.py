"""grouping.mode: auto on the folders people have, --groups-csv that refines, import's class names."""

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from autolabel.cli.app import app
from autolabel.config import GroupingConfig
from autolabel.images import auto_grouping, choose_gap, frame_sequence_groups
from autolabel.store import Store

runner = CliRunner()
NAMES = ["bolt", "nut"]


def _write(root: Path, rel: str, rng, captured: datetime | None = None) -> None:
    """A random-noise image (no accidental near-duplicates) and its one-box YOLO label."""
    path = root / "images" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if captured is not None:
        exif.get_ifd(0x8769)[0x9003] = captured.strftime("%Y:%m:%d %H:%M:%S")
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, exif=exif)
    label = (root / "labels" / rel).with_suffix(".txt")
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text(f"{int(rng.integers(0, 2))} 0.5 0.5 0.25 0.25\n")


def _folder(tmp_path: Path, kind: str) -> tuple[Path, dict[str, str]]:
    """A generated folder of one kind, and the group each image must land in."""
    rng = np.random.default_rng(0)
    root = tmp_path / kind
    expected = {}
    start = datetime(2024, 5, 1, 9, 0, 0)
    for session in range(5):
        for frame in range(4):
            if kind == "subfolders":
                rel, group = f"site{session}/im{frame}.jpg", f"site{session}"
                captured = None
            elif kind == "exif":  # sessions a few hours apart, shots 5-20 s apart inside one
                captured = start + timedelta(hours=3 * session, seconds=5 * frame * (1 + frame % 2))
                rel, group = f"DJI_{session * 4 + frame:04d}.jpg", session
            elif kind == "frames":
                rel, group = f"clip{session + 10}_{frame * 7 + 300:06d}.jpg", f"clip{session + 10}"
                captured = None
            else:
                rel, group = f"photo-{session}-{frame}-x.jpg", f"photo-{session}-{frame}-x.jpg"
                captured = None
            _write(root, rel, rng, captured)
            expected[rel] = group
    (root / "labels" / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return root, expected


@pytest.mark.parametrize(
    "kind, rule, n_groups",
    [
        ("subfolders", "subfolders", 5),
        ("exif", "EXIF capture-time sessions", 5),
        ("frames", "frame sequences from file names", 5),
        ("plain", "one group per image", 20),
    ],
)
def test_auto_grouping_fits_the_folder_and_splits_without_leaks(tmp_path, kind, rule, n_groups):
    root, expected = _folder(tmp_path, kind)
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["init", "--images", str(root / "images"), "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert f"grouping: {rule}" in result.output and f": {n_groups} groups" in result.output
    imported = runner.invoke(
        app, ["import", "--labels", str(root / "labels"), "-f", "yolo", "--add-classes", "-w", str(ws)]
    )
    assert imported.exit_code == 0, imported.output
    with Store.open(ws / ".autolabel" / "state.db") as store:
        got = {im.path: im.source_group for im in store.images()}
    # the same partition as expected, whatever the groups are called
    pairs = {(a, b) for a in got for b in got}
    assert {(a, b) for a, b in pairs if got[a] == got[b]} == {
        (a, b) for a, b in pairs if expected[a] == expected[b]
    }
    split = runner.invoke(app, ["split", "--report", "-w", str(ws)])
    assert split.exit_code == 0, split.output
    assert f"grouping: {rule}" in split.output
    assert "0 groups in both splits" in split.output
    with Store.open(ws / ".autolabel" / "state.db") as store:
        rows = store.conn.execute("SELECT image_id, split FROM split_assignments").fetchall()
        paths = {im.id: im.path for im in store.images()}
    sides: dict[str, set[str]] = {}
    for image_id, side in rows:
        sides.setdefault(got[paths[image_id]], set()).add(side)
    assert len(rows) == 20 and all(len(s) == 1 for s in sides.values())
    assert {"train", "val"} == set().union(*sides.values())


def test_auto_is_the_default_and_explicit_modes_stay():
    assert GroupingConfig().mode == "auto"
    assert GroupingConfig(mode="folder").mode == "folder"


def test_choose_gap_finds_the_break_or_none():
    start = datetime(2024, 1, 1)
    bursts = [start + timedelta(hours=2 * s, seconds=3 * k) for s in range(4) for k in range(5)]
    gap = choose_gap(bursts)
    assert 3 < gap < 7200 and gap >= 30
    regular = [start + timedelta(seconds=10 * k) for k in range(20)]
    assert choose_gap(regular) is None


def test_one_camera_counter_is_not_a_frame_sequence():
    assert frame_sequence_groups([f"IMG_{i:04d}.jpg" for i in range(10)]) is None
    grouping = auto_grouping([(f"IMG_{i:04d}.jpg", None) for i in range(10)])
    assert grouping.rule == "one group per image" and len(set(grouping.groups.values())) == 10


def test_groups_csv_refines_a_flat_folder(tmp_path):
    root, _ = _folder(tmp_path, "plain")
    ws = tmp_path / "ws"
    init = runner.invoke(
        app, ["init", "--images", str(root / "images"), "--group-by", "folder", "-w", str(ws)]
    )
    assert init.exit_code == 0 and "grouping: folders" in init.output and ": 1 groups" in init.output
    assert (
        runner.invoke(
            app, ["import", "-l", str(root / "labels"), "-f", "yolo", "--add-classes", "-w", str(ws)]
        ).exit_code
        == 0
    )
    refused = runner.invoke(app, ["split", "-w", str(ws)])
    assert refused.exit_code == 2 and "form one group" in refused.output
    csv_path = tmp_path / "groups.csv"
    paths = sorted(p.name for p in (root / "images").iterdir())
    csv_path.write_text("path,group\n" + "".join(f"{p},g{i}\n" for i, p in enumerate(paths)))
    result = runner.invoke(app, ["split", "--groups-csv", str(csv_path), "--report", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "(20 groups)" in result.output and "0 groups in both splits" in result.output


def _labels_only(tmp_path: Path) -> tuple[Path, Path]:
    root, _ = _folder(tmp_path, "subfolders")
    (root / "labels" / "classes.txt").unlink()
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", "--images", str(root / "images"), "-w", str(ws)]).exit_code == 0
    return root, ws


@pytest.mark.parametrize(
    "where", ["--names", "labels/classes.txt", "labels/data.yaml", "parent/data.yaml", "parent/classes.txt"]
)
def test_import_finds_class_names(tmp_path, where):
    root, ws = _labels_only(tmp_path)
    args = ["import", "-l", str(root / "labels"), "-f", "yolo", "--add-classes", "-w", str(ws)]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "--names" in missing.output
    if where == "--names":
        args += ["--names", "bolt, nut"]
    else:
        folder = root / "labels" if where.startswith("labels") else root
        name = where.split("/")[1]
        text = "names: [bolt, nut]\n" if name == "data.yaml" else "bolt\nnut\n"
        (folder / name).write_text(text)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with Store.open(ws / ".autolabel" / "state.db") as store:
        assert store.class_names() == NAMES


def test_import_names_must_be_distinct(tmp_path):
    root, ws = _labels_only(tmp_path)
    result = runner.invoke(
        app, ["import", "-l", str(root / "labels"), "-f", "yolo", "--names", "a,a", "-w", str(ws)]
    )
    assert result.exit_code == 2 and "--names" in result.output
