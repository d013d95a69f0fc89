"""push -> replay -> pull against a real local Label Studio (one server per test session)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel.errors import AutolabelError
from autolabel.formats import labelstudio as lsfmt
from autolabel.studio import project as studio_project
from autolabel.studio import pull as studio_pull
from autolabel.studio import push as studio_push
from autolabel.studio import replay, server
from autolabel.studio import state as studio_state
from tests.conftest_studio import CLASSES, client_for, make_workspace, stored_labels

pytestmark = pytest.mark.studio


def _push(sw, client, store, **kwargs):
    return studio_push.push(
        store,
        client,
        image_root=sw.ws.image_root,
        document_root=server.document_root(sw.ws.image_root),
        title=sw.title,
        **kwargs,
    )


def _project(sw, client, store):
    return studio_state.find_project(store, client.url, sw.title)


def _server_tasks(client, project_id):
    return list(client.iter_tasks(project_id, fields="task_only"))


def _task_ids_by_image(client, project_id) -> dict[int, int]:
    return {t["data"]["autolabel_image_id"]: t["id"] for t in _server_tasks(client, project_id)}


def _rect_result(width: int, height: int, region_id: str = "r") -> dict:
    """A rectanglelabels result without its value, sized for one image."""
    return {
        "id": region_id,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
    }


def _assert_matches_truth(labels: dict, truth: dict, tolerance_px: float = 1.0) -> None:
    assert set(labels) == set(truth)
    for path, (xyxy, cls) in truth.items():
        det = labels[path]
        assert len(det) == len(cls), path
        if len(cls):
            want, got = np.lexsort(xyxy.T), np.lexsort(det.xyxy.T)
            assert np.abs(xyxy[want] - det.xyxy[got]).max() <= tolerance_px, path
            assert (cls[want] == det.class_id[got]).all(), path


def test_round_trip_push_replay_pull(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 24, empty_every=6)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        summary = _push(sw, client, store, batch_size=10)
        assert summary.created == 24 and not summary.refused
        assert store.status_counts() == {"in_review": 24}
        project = _project(sw, client, store)
        tasks = list(client.iter_tasks(project.project_id))
        assert len(tasks) == 24
        # Pre-labels arrive as predictions with a model version, per-box and task-level scores.
        pred = tasks[1]["predictions"][0]
        assert pred["model_version"] == "proposer-v1" and 0 <= pred["score"] <= 1
        assert all("score" in r for r in pred["result"])
        # The image is served to the annotator through the local-files storage.
        assert client.fetch_bytes(tasks[0]["data"]["image"])[:2] == b"\xff\xd8"

        answered = replay.replay(client, project.project_id, sw.gt_dir)
        assert answered.answered == 24 and answered.empty == 4

        pulled = studio_pull.pull(store, client, title=sw.title)
        assert pulled.labeled == 24 and pulled.empty == 4 and not pulled.unknown_labels
        assert store.status_counts() == {"labeled": 24}
        _assert_matches_truth(stored_labels(store), sw.truth)

        # The raw annotation JSON is kept as Label Studio returned it.
        raw = store.conn.execute("SELECT raw, state FROM studio_annotations").fetchall()
        assert len(raw) == 24 and {r[1] for r in raw} == {"done"}
        assert all("result" in json.loads(r[0]) for r in raw)

        # Corrections: shifted boxes were moved, the dropped first box was added.
        (summary_row,) = studio_state.round_summaries(store)
        n_truth = sum(len(c) for _, c in sw.truth.values())
        assert summary_row["images"] == 24 and summary_row["boxes_human"] == n_truth
        assert summary_row["added"] == n_truth - summary_row["boxes_shown"]
        assert summary_row["deleted"] == 0 and summary_row["relabeled"] == 0
        # Every shown box is a real object shifted by 3 px: most stay true positives at IoU 0.5.
        assert 0.85 <= summary_row["precision"] <= 1.0 and summary_row["seconds"] > 0
        shown, human = summary_row["boxes_shown"], summary_row["boxes_human"]
        assert summary_row["recall"] == pytest.approx(summary_row["precision"] * shown / human)


def test_repush_is_idempotent_and_replaces_prelabels(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 12)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        again = _push(sw, client, store)
        assert again.created == 0 and again.unchanged == 12
        project = _project(sw, client, store)
        assert len(_server_tasks(client, project.project_id)) == 12

        # A newer model proposes again for two images: their tasks get the new pre-labels only.
        images = store.images()[:2]
        det = dets.make([[1, 1, 20, 20]], [2], [0.9])
        store.save_predictions([(im.id, "key-v2", "proposer-v2", dets.to_json(det), None) for im in images])
        replaced = _push(sw, client, store)
        assert replaced.replaced == 2 and replaced.created == 0
        tasks = {t["data"]["autolabel_image_id"]: t for t in client.iter_tasks(project.project_id)}
        assert len(tasks) == 12
        for im in images:
            preds = tasks[im.id]["predictions"]
            assert [p["model_version"] for p in preds] == ["proposer-v2"]
            assert preds[0]["result"][0]["value"]["rectanglelabels"] == ["washer"]


def test_pull_is_incremental_and_survives_interruption(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 10)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        project = _project(sw, client, store)
        replay.replay(client, project.project_id, sw.gt_dir, limit=4)

        # Interrupted right after the raw annotations were stored, before any conversion.
        def interrupt(n=1):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            studio_pull.pull(store, client, title=sw.title, advance=interrupt)
        assert store.labels() == {}
        first = studio_pull.pull(store, client, title=sw.title)
        assert first.labeled == 4

        replay.replay(client, project.project_id, sw.gt_dir)
        second = studio_pull.pull(store, client, title=sw.title)
        assert second.labeled == 6 and second.unchanged == 4

        # A human edits one annotation: only that one is converted again.
        task_id, annotation_id = store.conn.execute(
            "SELECT task_id, annotation_id FROM studio_annotations ORDER BY task_id LIMIT 1"
        ).fetchone()
        client.update_annotation(annotation_id, [])
        third = studio_pull.pull(store, client, title=sw.title)
        assert third.labeled == 1 and third.empty == 1
        image_id = store.conn.execute(
            "SELECT image_id FROM studio_tasks WHERE task_id = ?", (task_id,)
        ).fetchone()[0]
        assert len(dets.from_json(store.labels()[image_id])) == 0


@pytest.mark.parametrize("via_export", [False, True], ids=["paged", "export"])
def test_skipped_empty_rotated_clipped_and_deleted_tasks(studio_server, tmp_path, monkeypatch, via_export):
    if via_export:
        monkeypatch.setattr(studio_pull, "EXPORT_THRESHOLD", 1)
    sw = make_workspace(studio_server, tmp_path, 5, predict=True)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        project = _project(sw, client, store)
        by_image = _task_ids_by_image(client, project.project_id)
        images = store.images()
        w, h = images[0].width, images[0].height
        rect = _rect_result(w, h)
        rotated = {
            **rect,
            "value": {
                "x": 50,
                "y": 20,
                "width": 20,
                "height": 10,
                "rotation": 90,
                "rectanglelabels": ["nut"],
            },
        }
        outside = {
            **rect,
            "id": "o",
            "value": {
                "x": 90,
                "y": -10,
                "width": 30,
                "height": 40,
                "rotation": 0,
                "rectanglelabels": ["bolt"],
            },
        }
        client.create_annotation(by_image[images[0].id], [rotated, outside])
        client.create_annotation(by_image[images[1].id], [])  # verified: no objects
        client.create_annotation(by_image[images[2].id], [], was_cancelled=True)  # skipped
        client.delete_task(by_image[images[3].id])

        pulled = studio_pull.pull(store, client, title=sw.title)
        assert (pulled.labeled, pulled.empty, pulled.skipped, pulled.deleted) == (2, 1, 1, 1)
        assert (pulled.rotated, pulled.clipped) == (1, 1)
        labels = store.labels()
        det = dets.from_json(labels[images[0].id])
        # 90 degrees clockwise around (x, y): the box spans x - h .. x, y .. y + w (in pixels).
        x, y, bw, bh = 0.5 * w, 0.2 * h, 0.2 * w, 0.1 * h
        np.testing.assert_allclose(det.xyxy[0], [x - bh, y, x, y + bw], atol=0.02)
        np.testing.assert_allclose(det.xyxy[1], [0.9 * w, 0, w, 0.3 * h], atol=0.02)
        assert det.class_id.tolist() == [1, 0]
        assert len(dets.from_json(labels[images[1].id])) == 0
        statuses = {im.id: im.status for im in store.images()}
        assert statuses[images[1].id] == "labeled"  # a verified empty image is labeled
        assert statuses[images[2].id] == "in_review"  # skipped: still waiting for a human
        assert statuses[images[3].id] == "proposed"  # task deleted: back to the pool
        # Re-push does not resurrect a task deleted in Label Studio.
        assert _push(sw, client, store).created == 0


def test_unknown_label_is_one_error_and_recovers(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 3)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        project = _project(sw, client, store)
        # Someone adds a label in Label Studio's settings and uses it.
        client.set_label_config(project.project_id, lsfmt.label_config(CLASSES + ["screw", "rivet"]))
        task = _server_tasks(client, project.project_id)[0]
        image = store.images(ids=[task["data"]["autolabel_image_id"]])[0]
        box = {
            "id": "a",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": image.width,
            "original_height": image.height,
            "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0},
        }
        client.create_annotation(
            task["id"],
            [
                {**box, "value": {**box["value"], "rectanglelabels": ["screw"]}},
                {**box, "id": "b", "value": {**box["value"], "rectanglelabels": ["rivet"]}},
            ],
        )
        pulled = studio_pull.pull(store, client, title=sw.title)
        message = pulled.error_message()
        assert message.count("\n") == 0 and "'rivet', 'screw'" in message
        assert store.labels() == {}
        # Adding the classes (they append) and pulling again converts the stored annotation.
        store.ensure_classes(["screw", "rivet"])
        again = studio_pull.pull(store, client, title=sw.title)
        assert again.labeled == 1 and not again.unknown_labels
        assert sorted(dets.from_json(store.labels()[image.id]).class_id.tolist()) == [3, 4]


def test_new_class_appends_to_project_labels(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 2)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        store.ensure_classes(["screw"])
        summary = _push(sw, client, store)
        assert summary.labels_added == ["screw"]
        project = client.get_project(_project(sw, client, store).project_id)
        assert studio_project.project_labels(project["label_config"]) == CLASSES + ["screw"]


def test_interrupted_import_is_reconciled_without_duplicates(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 12)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        project = _project(sw, client, store)
        # State as left by a crash after the server created the tasks but before their ids were
        # recorded (4 images), and by a crash before the batch was sent at all (4 images).
        ids = [im.id for im in store.images()]
        with store.transaction():
            store.conn.execute(
                f"UPDATE studio_tasks SET state = 'pending', task_id = NULL WHERE image_id IN ({','.join('?' * 8)})",
                ids[:8],
            )
        for t in _server_tasks(client, project.project_id):
            if t["data"]["autolabel_image_id"] in ids[4:8]:
                client.delete_task(t["id"])
        summary = _push(sw, client, store)
        assert summary.recovered == 4 and summary.created == 4
        tasks = _server_tasks(client, project.project_id)
        assert sorted(t["data"]["autolabel_image_id"] for t in tasks) == sorted(ids)
        rows = store.conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM studio_tasks WHERE state='pushed'"
        )
        assert tuple(rows.fetchone()) == (12, 12)


_PUSH_SCRIPT = """
import sys
from autolabel.studio import push as studio_push
from autolabel.studio import server
from autolabel.studio import state as studio_state
from autolabel.studio.client import StudioClient
from autolabel.workspace import Workspace
ws = Workspace.load(sys.argv[1])
with StudioClient(sys.argv[2], sys.argv[3]) as client, ws.open_store() as store:
    studio_state.ensure_schema(store)
    studio_push.push(store, client, image_root=ws.image_root, document_root=server.document_root(ws.image_root),
              title=ws.config.studio.project_title, batch_size=5)
"""


def test_kill_during_push_then_rerun(studio_server, tmp_path, monkeypatch):
    monkeypatch.setattr(studio_pull, "EXPORT_THRESHOLD", 30)  # the 60-task pull goes through the export call
    sw = make_workspace(studio_server, tmp_path, 60)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _PUSH_SCRIPT, str(sw.ws.root), studio_server.url, studio_server.token],
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        with sw.ws.open_store() as store:
            studio_state.ensure_schema(store)
            while time.monotonic() < deadline and proc.poll() is None:
                done = store.conn.execute(
                    "SELECT COUNT(*) FROM studio_tasks WHERE state = 'pushed'"
                ).fetchone()[0]
                if done >= 10:
                    break
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        killed_at = store.conn.execute("SELECT COUNT(*) FROM studio_tasks WHERE state = 'pushed'").fetchone()[
            0
        ]
        assert killed_at < 60, "the push finished before it could be killed; the test proves nothing"
        _push(sw, client, store, batch_size=5)
        project = _project(sw, client, store)
        tasks = _server_tasks(client, project.project_id)
        image_ids = [t["data"]["autolabel_image_id"] for t in tasks]
        assert len(image_ids) == 60 and len(set(image_ids)) == 60
        replay.replay(client, project.project_id, sw.gt_dir)
        assert studio_pull.pull(store, client, title=sw.title).labeled == 60
        _assert_matches_truth(stored_labels(store), sw.truth)


def test_pull_after_server_restart(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 8)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        project = _project(sw, client, store)
        replay.replay(client, project.project_id, sw.gt_dir)
    assert server.stop(studio_server.studio_dir)
    state = server.start(
        studio_server.studio_dir, studio_server.images_base / "root", studio_server.port, timeout=300
    )
    assert state.url == studio_server.url
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        assert studio_pull.pull(store, client, title=sw.title).labeled == 8
        _assert_matches_truth(stored_labels(store), sw.truth)


def test_image_paths_that_escape_the_root_are_refused(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    assert (
        studio_push.local_files_url(root, tmp_path, "a b/c#1.jpg")
        == "/data/local-files/?d=images/a%20b/c%231.jpg"
    )
    for bad in ("../secret.jpg", "/etc/passwd", "link.jpg", ""):
        with pytest.raises(AutolabelError):
            studio_push.local_files_url(root, tmp_path, bad)
    with pytest.raises(AutolabelError):
        replay.task_stem({"id": 1, "data": {"image": "/data/local-files/?d=../../etc/passwd"}})


def test_upload_mode_for_servers_that_cannot_see_the_images(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 7)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        summary = _push(sw, client, store, image_mode="upload", batch_size=4)
        assert summary.created == 7
        project = _project(sw, client, store)
        tasks = list(client.iter_tasks(project.project_id, fields="task_only"))
        paths = {im.id: im.path for im in store.images()}
        for task in tasks:
            url = task["data"]["image"]
            assert url.startswith("/data/upload/")
            original = (sw.ws.image_root / paths[task["data"]["autolabel_image_id"]]).read_bytes()
            assert client.fetch_bytes(url) == original
        assert _push(sw, client, store, image_mode="upload").created == 0
        replay.replay(client, project.project_id, sw.gt_dir)
        assert studio_pull.pull(store, client, title=sw.title).labeled == 7
        _assert_matches_truth(stored_labels(store), sw.truth)


def test_malformed_annotations_are_held_back_and_released_and_deleted_ones_withdrawn(studio_server, tmp_path):
    """One bad annotation never blocks the others, never becomes 'verified empty', and is released
    once fixed in Label Studio; an annotation deleted there takes its labels with it."""
    sw = make_workspace(studio_server, tmp_path, 4)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        _push(sw, client, store)
        project = _project(sw, client, store)
        by_image = _task_ids_by_image(client, project.project_id)
        images = store.images()
        w, h = images[0].width, images[0].height
        rect = _rect_result(w, h)
        good = {
            **rect,
            "id": "g",
            "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["bolt"]},
        }
        no_x = {**rect, "id": "n", "value": {"y": 10, "width": 20, "height": 20, "rectanglelabels": ["bolt"]}}
        polygon = {
            "id": "p",
            "type": "polygonlabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": {"points": [[10, 10], [30, 10], [30, 30]], "polygonlabels": ["nut"]},
        }
        bad_id = client.create_annotation(by_image[images[0].id], [no_x])
        poly_id = client.create_annotation(by_image[images[1].id], [polygon])
        good_id = client.create_annotation(by_image[images[2].id], [good])

        pulled = studio_pull.pull(store, client, title=sw.title)
        assert pulled.labeled == 1 and pulled.empty == 0
        reasons = dict(pulled.quarantined)
        assert "missing 'x'" in reasons[images[0].id] and "polygonlabels" in reasons[images[1].id]
        assert set(store.labels()) == {images[2].id}  # neither bad one became labels, empty or not
        assert {q["image_id"] for q in studio_state.quarantined(store)} == {images[0].id, images[1].id}
        again = studio_pull.pull(
            store, client, title=sw.title
        )  # still held, nothing raised, nothing else changed
        assert len(again.quarantined) == 2 and set(store.labels()) == {images[2].id}

        client.update_annotation(bad_id, [{**no_x, "value": {**no_x["value"], "x": 5}}])  # fixed
        client.delete_annotation(poly_id)  # given up on
        client.delete_annotation(good_id)  # withdrawn
        fixed = studio_pull.pull(store, client, title=sw.title)
        assert fixed.quarantined == [] and studio_state.quarantined(store) == []
        assert fixed.withdrawn == 2  # the polygon's quarantine and the good annotation's labels
        assert set(store.labels()) == {images[0].id}
        statuses = {im.id: im.status for im in store.images()}
        assert statuses[images[0].id] == "labeled" and statuses[images[2].id] == "in_review"
        assert statuses[images[1].id] == "in_review"


def test_two_workspaces_with_one_title_get_their_own_projects(studio_server, tmp_path):
    """The default title is the same for every workspace: ownership, not the title, decides."""
    a = make_workspace(studio_server, tmp_path / "a", 3, seed=1)
    c = make_workspace(studio_server, tmp_path / "c", 3, seed=2)
    title = f"shared {a.title}"[:50]
    with client_for(studio_server) as client, a.ws.open_store() as sa, c.ws.open_store() as sc:
        assert sa.workspace_id() != sc.workspace_id() and sa.workspace_id() == sa.workspace_id()
        pc = studio_push.push(
            sc,
            client,
            image_root=c.ws.image_root,
            document_root=server.document_root(c.ws.image_root),
            title=title,
        )
        pa = studio_push.push(
            sa,
            client,
            image_root=a.ws.image_root,
            document_root=server.document_root(a.ws.image_root),
            title=title,
        )
        assert pa.project_id != pc.project_id and pa.created == pc.created == 3
        assert (
            studio_project.project_owner(client.get_project(pc.project_id)["description"])
            == sc.workspace_id()
        )
        assert (
            studio_project.project_owner(client.get_project(pa.project_id)["description"])
            == sa.workspace_id()
        )
        # A copied state.db (or an edited row) pointing at C's project is refused, in one line
        sa.conn.execute("UPDATE studio_projects SET project_id = ?", (pc.project_id,))
        sa.conn.commit()
        with pytest.raises(AutolabelError, match="belongs to another autolabel workspace"):
            studio_pull.pull(sa, client, title=title)
        sa.conn.execute("UPDATE studio_projects SET project_id = ?", (pa.project_id,))
        sa.conn.commit()


def test_recovery_in_a_shared_project_matches_by_workspace_and_content(studio_server, tmp_path):
    """Asked to share one project, an interrupted push of A must not adopt C's task for the image
    with the same id, and must never delete C's annotated task."""
    a = make_workspace(studio_server, tmp_path / "a", 3, seed=3)
    c = make_workspace(studio_server, tmp_path / "c", 3, seed=4)
    title = f"both {a.title}"[:50]
    with client_for(studio_server) as client, a.ws.open_store() as sa, c.ws.open_store() as sc:
        pc = studio_push.push(
            sc,
            client,
            image_root=c.ws.image_root,
            document_root=server.document_root(c.ws.image_root),
            title=title,
            share=True,
        )
        c_tasks = _task_ids_by_image(client, pc.project_id)
        annotated = c_tasks[1]
        client.create_annotation(annotated, [])  # a human decision on C's image 1
        pa = studio_push.push(
            sa,
            client,
            image_root=a.ws.image_root,
            document_root=server.document_root(a.ws.image_root),
            title=title,
            share=True,
        )
        assert pa.project_id == pc.project_id and pa.created == 3
        project = studio_state.find_project(sa, client.url, title)
        # A crashed after persisting intent for its image 1 but before the server answered:
        sa.conn.execute("DELETE FROM studio_tasks WHERE image_id = 1")
        sa.conn.execute(
            "INSERT INTO studio_tasks(project, image_id, sha256, task_id, state, round) VALUES (?, 1, ?, NULL, 'pending', 0)",
            (project.key, sa.images(ids=[1])[0].sha256),
        )
        sa.conn.commit()
        recovered = studio_push.reconcile(sa, client, project)
        assert recovered == 1
        a_task = sa.conn.execute("SELECT task_id FROM studio_tasks WHERE image_id = 1").fetchone()[0]
        assert a_task != annotated and a_task not in c_tasks.values()
        alive = client.task_ids(pc.project_id)
        assert set(c_tasks.values()) <= alive  # nothing of C's was deleted, the annotated task least of all
