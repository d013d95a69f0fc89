from autolabel import detections as dets
from autolabel.store import Store


def test_classes_are_append_only(tmp_path):
    store = Store.open(tmp_path / "s.db")
    assert store.ensure_classes(["bolt", "nut"]) == {"bolt": 0, "nut": 1}
    assert store.ensure_classes(["washer", "bolt"]) == {"bolt": 0, "nut": 1, "washer": 2}
    assert store.class_names() == ["bolt", "nut", "washer"]


def _image(path, sha="x"):
    return {"path": path, "sha256": sha, "size_bytes": 1, "width": 10, "height": 10, "source_group": "g"}


def test_add_images_ignores_known_paths(tmp_path):
    store = Store.open(tmp_path / "s.db")
    assert store.add_images([_image("a.jpg"), _image("b.jpg")]) == 2
    assert store.add_images([_image("a.jpg"), _image("c.jpg")]) == 1
    assert [im.path for im in store.images()] == ["a.jpg", "b.jpg", "c.jpg"]


def test_predictions_mark_proposed_and_labels_mark_labeled(tmp_path):
    store = Store.open(tmp_path / "s.db")
    store.add_images([_image("a.jpg")])
    (image,) = store.images()
    det = dets.make([[1, 2, 3, 4]], [0], [0.5])
    store.save_predictions([(image.id, "k", "v1", dets.to_json(det), None)])
    assert store.images()[0].status == "proposed"
    assert store.predicted_ids("k") == {image.id}
    store.set_labels(image.id, "import", dets.to_json(det))
    assert store.images()[0].status == "labeled"
    assert dets.from_json(store.labels()[image.id]).xyxy.tolist() == [[1, 2, 3, 4]]
