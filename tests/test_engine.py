"""The propose engine with a stand-in proposer: the unit under test is the engine, not a model."""

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel.config import GroupingConfig
from autolabel.engine import model_key, run_proposals
from autolabel.proposers.base import BatchMapper, ProposerSettings
from autolabel.registry import register_images
from autolabel.store import Store
from tests.builders import rgb


class CornerBoxProposer:
    """Puts one box of class 1 in the top-left quarter; fails on images of a given width."""

    model_version = "corner-box:1"

    def __init__(self, fail_width=None, interrupt_after=None):
        self.fail_width = fail_width
        self.interrupt_after = interrupt_after
        self.calls = 0

    def predict(self, images):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        out = []
        for image in images:
            h, w = image.shape[:2]
            if w == self.fail_width:
                raise RuntimeError("boom")
            out.append(dets.make([[0, 0, w / 2, h / 2]], [1], [0.9]))
        return out


@pytest.fixture
def workspace(tmp_path):
    for i in range(10):
        rgb(tmp_path / "raw" / f"{i:02d}.jpg", width=64 + (i == 3) * 16, seed=i)
    store = Store.open(tmp_path / "s.db")
    register_images(store, tmp_path / "raw", GroupingConfig())
    return store, tmp_path / "raw"


SETTINGS = ProposerSettings(model="corner", batch_size=3)


def _run(store, root, proposer, force=False):
    ids = store.ensure_classes(["nut", "bolt"])
    class_ids = [ids["nut"], ids["bolt"]]
    key = model_key(SETTINGS, proposer.model_version, "onto")
    return run_proposals(store, root, BatchMapper(lambda: proposer), class_ids, SETTINGS, key, force)


def test_every_image_proposed_once_then_skipped(workspace):
    store, root = workspace
    first = _run(store, root, CornerBoxProposer())
    assert (first.proposed, first.skipped) == (10, 0)
    again = _run(store, root, CornerBoxProposer())
    assert (again.proposed, again.skipped) == (0, 10)
    forced = _run(store, root, CornerBoxProposer(), force=True)
    assert forced.proposed == 10
    assert all(im.status == "proposed" for im in store.images())


def test_boxes_are_stored_in_pixels_with_store_class_ids(workspace):
    store, root = workspace
    store.ensure_classes(["washer"])  # the store's order differs from the ontology's
    _run(store, root, CornerBoxProposer())
    predictions = store.latest_predictions()
    det = dets.from_json(predictions[store.images()[0].id][1])
    assert det.xyxy.tolist() == [[0, 0, 32, 32]]
    assert store.class_names()[int(det.class_id[0])] == "bolt"


def test_interrupted_run_resumes_without_repeating(workspace):
    store, root = workspace
    with pytest.raises(KeyboardInterrupt):
        _run(store, root, CornerBoxProposer(interrupt_after=2))
    done = len(store.predicted_ids(model_key(SETTINGS, "corner-box:1", "onto")))
    assert done == 6  # two committed batches of three
    rest = _run(store, root, CornerBoxProposer())
    assert (rest.proposed, rest.skipped) == (4, 6)


def test_model_failure_on_one_image_is_recorded_and_retried(workspace):
    store, root = workspace
    summary = _run(store, root, CornerBoxProposer(fail_width=80))
    assert summary.proposed == 9
    assert [path for path, _ in summary.model_errors] == ["03.jpg"]
    retry = _run(store, root, CornerBoxProposer())
    assert retry.proposed == 1


def test_file_broken_after_registration_becomes_an_error_row(workspace):
    store, root = workspace
    (root / "05.jpg").write_bytes(b"garbage")
    summary = _run(store, root, CornerBoxProposer())
    assert summary.proposed == 9
    assert summary.decode_errors[0][0] == "05.jpg"
    assert [im.path for im in store.images(status="error")] == ["05.jpg"]


def test_batch_mapper_speaks_ray_column_batches(tmp_path):
    good = rgb(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"")
    mapper = BatchMapper(CornerBoxProposer)
    out = mapper({"id": np.array([1, 2]), "path": np.array([str(good), str(tmp_path / "b.jpg")])})
    assert out["id"] == [1, 2]
    assert out["error"][0] is None and "empty file" in out["error"][1]
    assert out["detections"][0]["class_id"] == [1] and out["detections"][1] is None
