import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel import detections as dets
from autolabel.cli.app import app
from autolabel.formats import coco, yolo
from autolabel.store import Store
from autolabel.synthetic import CLASS_NAMES, generate_dataset

ONTOLOGY = Path(__file__).parents[1] / "prompts" / "fasteners.yaml"
runner = CliRunner()


def _workspace(tmp_path, n=6, ontology=True):
    data = tmp_path / "ws" / "photos"
    generate_dataset(data, n=n, seed=1, imgsz=64, groups=2)
    labels = tmp_path / "yolo_labels"
    shutil.move(str(data / "labels"), labels)
    shutil.move(str(data / "data.yaml"), labels / "data.yaml")
    images = data / "images"
    args = ["init", "--images", str(images), "-w", str(tmp_path / "ws")]
    if ontology:
        args += ["--ontology", str(ONTOLOGY)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return tmp_path / "ws", images, labels


def _store(ws):
    return Store.open(ws / ".autolabel" / "state.db")


def _expected(images: Path, labels: Path):
    out = {}
    for label in sorted(labels.rglob("*.txt")):
        rel = label.relative_to(labels).with_suffix(".jpg").as_posix()
        out[rel] = yolo.from_lines(label.read_text().splitlines(), 64, 64)
    return out


def test_yolo_import_enters_verified_labels(tmp_path):
    ws, images, labels = _workspace(tmp_path)
    result = runner.invoke(app, ["import", "--labels", str(labels), "--format", "yolo", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    expected = _expected(images, labels)
    with _store(ws) as store:
        assert store.class_names() == list(CLASS_NAMES)
        by_path = {im.path: im for im in store.images()}
        stored = store.labels()
        assert {im.status for im in by_path.values()} == {"labeled"}
        sources = {r[0] for r in store.conn.execute("SELECT source FROM labels")}
        assert sources == {"import"}
        for rel, det in expected.items():
            got = dets.from_json(stored[by_path[rel].id])
            np.testing.assert_allclose(got.xyxy, det.xyxy, atol=0.01)
            assert got.class_id.tolist() == det.class_id.tolist()
    boxes = sum(len(d) for d in expected.values())
    assert f"imported {boxes} boxes on 6 images" in result.output
    # a rerun replaces its own import: same result, no duplicates
    again = runner.invoke(app, ["import", "--labels", str(labels), "--format", "yolo", "-w", str(ws)])
    assert again.exit_code == 0 and f"imported {boxes} boxes on 6 images" in again.output


@pytest.mark.parametrize(
    "names_file, content",
    [
        ("data.yaml", "names: [bolt, nut, washer, screw]\n"),
        ("data.yaml", "names: {0: bolt, 1: nut, 2: washer, 3: screw}\n"),
        ("classes.txt", "bolt\nnut\nwasher\nscrew\n"),
    ],
)
def test_yolo_names_sources(tmp_path, names_file, content):
    from autolabel.importer import yolo_class_names

    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / names_file).write_text(content)
    assert yolo_class_names(folder) == list(CLASS_NAMES)


def test_coco_import_maps_categories_by_name(tmp_path):
    ws, images, labels = _workspace(tmp_path)
    expected = _expected(images, labels)
    # categories listed in another order than the ontology: washer, screw, bolt, nut
    order = ["washer", "screw", "bolt", "nut"]
    to_file = np.array([order.index(name) for name in CLASS_NAMES])
    entries = []
    for index, (rel, det) in enumerate(sorted(expected.items()), start=1):
        file_det = dets.make(det.xyxy, to_file[det.class_id]) if len(det) else det
        entries.append((index, rel, 64, 64, file_det))
    coco_path = tmp_path / "instances.json"
    coco_path.write_text(json.dumps(coco.dataset(order, entries)))
    result = runner.invoke(app, ["import", "--labels", str(coco_path), "--format", "coco", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    with _store(ws) as store:
        by_path = {im.path: im for im in store.images()}
        stored = store.labels()
        for rel, det in expected.items():
            got = dets.from_json(stored[by_path[rel].id])
            np.testing.assert_allclose(got.xyxy, det.xyxy, atol=0.02)
            assert got.class_id.tolist() == det.class_id.tolist()


def test_unknown_classes_are_listed_in_one_error_unless_added(tmp_path):
    ws, _images, labels = _workspace(tmp_path)
    (labels / "data.yaml").write_text("names: [bolt, rivet, pin, screw]\n")  # ids 1 and 2 renamed
    used = {int(line.split()[0]) for f in labels.rglob("*.txt") for line in f.read_text().splitlines()}
    assert {1, 2} <= used
    result = runner.invoke(app, ["import", "--labels", str(labels), "--format", "yolo", "-w", str(ws)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: 2 class names")
    assert "pin, rivet" in lines[0] and "--add-classes" in lines[0]
    with _store(ws) as store:
        assert store.labels() == {}  # nothing written
    result = runner.invoke(
        app, ["import", "--labels", str(labels), "--format", "yolo", "--add-classes", "-w", str(ws)]
    )
    assert result.exit_code == 0, result.output
    with _store(ws) as store:
        assert store.class_names() == [*CLASS_NAMES, "rivet", "pin"]  # in the file's order
        assert len(store.labels()) == 6


@pytest.mark.parametrize(
    "line, message",
    [
        ("7 0.5 0.5 0.1 0.1", "class ids [7] are outside the 4 names"),
        ("0 0.5 0.5 0.1", "malformed YOLO label files"),
    ],
)
def test_bad_yolo_files_fail_before_anything_is_written(tmp_path, line, message):
    ws, _images, labels = _workspace(tmp_path, n=2)
    first = min(labels.rglob("*.txt"))
    first.write_text(line + "\n")
    result = runner.invoke(app, ["import", "--labels", str(labels), "--format", "yolo", "-w", str(ws)])
    assert result.exit_code == 2 and message in result.output, result.output
    with _store(ws) as store:
        assert store.labels() == {}


def test_missing_labels_orphans_and_images_outside_the_workspace(tmp_path):
    ws, images, labels = _workspace(tmp_path, n=4)
    files = sorted(labels.rglob("*.txt"))
    files[0].unlink()  # its image stays unlabeled
    (labels / "g00" / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    result = runner.invoke(app, ["import", "--labels", str(labels), "--format", "yolo", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "1 labels have no image" in result.output and "ghost.txt" in result.output
    with _store(ws) as store:
        assert sorted(store.status_counts().items()) == [("labeled", 3), ("unlabeled", 1)]
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(images, elsewhere)
    result = runner.invoke(
        app,
        ["import", "--labels", str(labels), "--format", "yolo", "--images", str(elsewhere), "-w", str(ws)],
    )
    assert result.exit_code == 2 and "outside the workspace image folder" in result.output


def test_import_from_a_subfolder_of_the_image_root(tmp_path):
    ws, images, labels = _workspace(tmp_path, n=4)
    result = runner.invoke(
        app,
        [
            "import",
            "--labels",
            str(labels / "g01"),
            "--format",
            "yolo",
            "--images",
            str(images / "g01"),
            "-w",
            str(ws),
        ],
    )
    # names come from data.yaml in the parent of the labels folder
    assert result.exit_code == 0, result.output
    with _store(ws) as store:
        labeled = {im.path for im in store.images(status="labeled")}
    assert labeled == {p.relative_to(images).as_posix() for p in (images / "g01").glob("*.jpg")}


def _good_coco():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "bolt"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12]}],
    }


def _broken(path: str, value=None, delete: bool = False):
    data = _good_coco()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if delete:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


COCO_FAULTS = [
    (_broken("annotations.0.bbox", delete=True), "annotations[0] (id 7): missing 'bbox'"),
    (_broken("annotations.0.category_id", delete=True), "missing 'category_id'"),
    (_broken("annotations.0.image_id", delete=True), "missing 'image_id'"),
    (_broken("annotations.0.id", delete=True), "annotations[0]: missing 'id'"),
    (_broken("images.0.file_name", delete=True), "images[0]: missing 'file_name'"),
    (_broken("images.0.id", delete=True), "images[0]: missing 'id'"),
    (_broken("categories.0.name", delete=True), "categories[0]: missing 'name'"),
    (_broken("categories.0.id", delete=True), "categories[0]: missing 'id'"),
    (_broken("annotations.0.bbox", [1, 2, 3]), "'bbox' must be [x, y, width, height]"),
    (_broken("annotations.0.bbox", ["1", 2, 3, 4]), "'bbox' must be [x, y, width, height]"),
    (_broken("annotations.0.bbox", [1, 2, -3, 4]), "negative width or height"),
    (_broken("annotations.0.category_id", 9), "category id 9 is not in 'categories'"),
    (_broken("annotations.0.image_id", 5), "1 annotations refer to image ids that are not in 'images'"),
    (_broken("annotations", {"x": 1}), "'annotations' must be a list"),
    (_broken("images", None), "needs 'images' and 'categories' lists"),
    (_broken("images.0", "a.jpg"), "images[0]: expected an object"),
    (_broken("annotations.0.score", "high"), "'score' must be a number"),
]


@pytest.mark.parametrize("data, message", COCO_FAULTS)
def test_malformed_coco_is_one_error_line_and_nothing_is_imported(tmp_path, data, message):
    ws, _, _ = _workspace(tmp_path, n=2)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["import", "--labels", str(path), "--format", "coco", "-w", str(ws)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.count("error:") == 1
    with _store(ws) as store:
        assert store.labels() == {}


def test_coco_validate_accepts_the_good_file_and_reports_orphans():
    assert coco.validate(_good_coco()) == []
    assert coco.validate(_broken("annotations.0.image_id", 3)) == [(7, 3)]


@pytest.mark.parametrize("kind", ["coco", "yolo", "ontology", "config", "recipe"])
def test_files_that_are_not_utf8_are_one_error_line(tmp_path, kind):
    latin1 = "classes:\n  - name: écrou\n".encode("latin-1")
    if kind in ("coco", "yolo"):
        ws, _, labels = _workspace(tmp_path, n=2)
        if kind == "coco":
            target = tmp_path / "bad.json"
            target.write_bytes(b'{"images": [], "categories": [{"id": 1, "name": "\xe9"}]}')
        else:
            target = labels
            next(labels.rglob("*.txt")).write_bytes(b"0 0.5 0.5 0.1 0.1 \xe9\n")
        args = ["import", "--labels", str(target), "--format", kind, "-w", str(ws)]
    elif kind == "ontology":
        target = tmp_path / "prompts.yaml"
        target.write_bytes(latin1)
        (tmp_path / "raw").mkdir()
        args = [
            "init",
            "--images",
            str(tmp_path / "raw"),
            "-w",
            str(tmp_path / "ws"),
            "--ontology",
            str(target),
        ]
    elif kind == "config":
        ws, _, _ = _workspace(tmp_path, n=2)
        target = ws / "autolabel.yaml"
        target.write_bytes(target.read_bytes() + b"# caf\xe9\n")
        args = ["status", "-w", str(ws)]
    else:
        ws, _, _ = _workspace(tmp_path, n=2)
        target = tmp_path / "recipe.yaml"
        target.write_bytes(b"rounds: 2 # caf\xe9\n")
        args = ["select", "-w", str(ws), "--recipe", str(target)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "is not valid UTF-8 (byte 0xe9" in result.output and "Traceback" not in result.output, (
        result.output
    )
    assert result.output.count("error:") == 1


def test_an_empty_prompt_list_is_an_error_not_the_class_name(tmp_path):
    from autolabel.errors import AutolabelError
    from autolabel.ontology import Ontology

    with pytest.raises(AutolabelError, match="class 'bolt' has no prompts"):
        Ontology.from_dict({"classes": [{"name": "bolt", "prompts": []}]}, source="p.yaml")
    assert Ontology.from_dict({"classes": [{"name": "bolt"}]}, source="p.yaml").classes[0].prompts == (
        "bolt",
    )
