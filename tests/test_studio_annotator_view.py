"""Label Studio as annotators expect it: colours and hotkeys, sortable scores, round instructions."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from autolabel import detections as dets
from autolabel.formats import labelstudio as lsfmt
from autolabel.studio import project as studio_project
from autolabel.studio import push as studio_push
from autolabel.studio import server
from autolabel.studio import state as studio_state
from tests.conftest_studio import CLASSES, client_for, make_workspace


@pytest.mark.parametrize("n", [3, 12, 45])
def test_label_config_gives_every_class_its_own_colour_and_hotkey(n):
    names = [f"class{i}" for i in range(n)]
    labels = list(ET.fromstring(lsfmt.label_config(names)).iter("Label"))
    assert [lab.get("value") for lab in labels] == names
    colours = [lab.get("background") for lab in labels]
    assert len(set(colours)) == n and all(c.startswith("#") and len(c) == 7 for c in colours)
    hotkeys = [lab.get("hotkey") for lab in labels if lab.get("hotkey")]
    assert len(hotkeys) == min(n, len(lsfmt.HOTKEYS)) == len(set(hotkeys))
    assert hotkeys[:3] == ["1", "2", "3"]


def test_every_prediction_carries_a_score_for_sorting():
    with_boxes = dets.make([[1, 1, 5, 5], [2, 2, 8, 8]], [0, 1], [0.2, 0.6])
    empty = dets.make([], [])
    for det in (with_boxes, empty):
        pred = lsfmt.prediction(det, ["a", "b"], 10, 10, "m")
        assert isinstance(pred["score"], float) and 0 <= pred["score"] <= 1
    assert lsfmt.prediction(with_boxes, ["a", "b"], 10, 10, "m")["score"] == pytest.approx(0.4)


def test_round_instructions_say_purpose_hotkeys_and_remaining():
    text = studio_project.round_instructions(2, 17, ["bolt", "<nut>"], student=True)
    assert "Round 2" in text and "least sure" in text and "17 tasks remain" in text
    assert "1 bolt" in text and "2 &lt;nut&gt;" in text
    assert "first batch" in studio_project.round_instructions(0, 5, ["bolt"], student=False)


@pytest.mark.studio
def test_pushed_project_has_colours_hotkeys_scores_and_instructions(studio_server, tmp_path):
    sw = make_workspace(studio_server, tmp_path, 6)
    with client_for(studio_server) as client, sw.ws.open_store() as store:
        summary = studio_push.push(
            store,
            client,
            image_root=sw.ws.image_root,
            document_root=server.document_root(sw.ws.image_root),
            title=sw.title,
        )
        assert summary.created == 6 and summary.remaining == 6
        project = studio_state.find_project(store, client.url, sw.title)
        remote = client.request("GET", f"/api/projects/{project.project_id}/")
        labels = list(ET.fromstring(remote["label_config"]).iter("Label"))
        assert [lab.get("value") for lab in labels] == CLASSES
        assert len({lab.get("background") for lab in labels}) == len(CLASSES)
        assert [lab.get("hotkey") for lab in labels] == ["1", "2", "3"]
        assert remote["show_instruction"] is True
        assert "Round 0" in remote["expert_instruction"] and "6 tasks remain" in remote["expert_instruction"]
        tasks = list(client.iter_tasks(project.project_id))
        assert len(tasks) == 6
        assert all(t["predictions"] and isinstance(t["predictions"][0]["score"], float) for t in tasks)
