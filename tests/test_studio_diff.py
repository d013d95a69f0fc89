"""Correction diff (kept / moved / relabeled / deleted / added), proposer P/R and the time cost model."""

from __future__ import annotations

import pytest

from autolabel import detections as dets
from autolabel.config import AnnotationCostConfig
from autolabel.store import Store
from autolabel.studio import diff
from autolabel.studio import state as studio_state

A = [10, 10, 50, 50]
A_NUDGED = [11, 10, 50, 50]  # IoU 0.975: kept
A_MOVED = [14, 14, 54, 54]  # IoU ~0.67: moved, still a true positive
A_FAR = [30, 30, 70, 70]  # IoU ~0.14: not the same object
B = [100, 100, 140, 160]


@pytest.mark.parametrize(
    "shown, human, expected",
    [
        # shown boxes/classes, human boxes/classes -> kept moved relabeled deleted added tp
        (([], []), ([], []), (0, 0, 0, 0, 0, 0)),
        (([A], [0]), ([A_NUDGED], [0]), (1, 0, 0, 0, 0, 1)),
        (([A], [0]), ([A_MOVED], [0]), (0, 1, 0, 0, 0, 1)),
        (([A], [0]), ([A], [1]), (0, 0, 1, 0, 0, 0)),
        (([A, B], [0, 1]), ([B], [1]), (1, 0, 0, 1, 0, 1)),
        (([A], [0]), ([A, B], [0, 2]), (1, 0, 0, 0, 1, 1)),
        (([A], [0]), ([A_FAR], [0]), (0, 0, 0, 1, 1, 0)),
        (([], []), ([A, B], [0, 1]), (0, 0, 0, 0, 2, 0)),
        (([A, B], [0, 1]), ([], []), (0, 0, 0, 2, 0, 0)),
        # Two overlapping candidates: the same-class one is matched.
        (([A, A_NUDGED], [1, 0]), ([A], [0]), (1, 0, 0, 1, 0, 1)),
    ],
)
def test_diff_table(shown, human, expected):
    s = dets.make(shown[0] or [[0, 0, 0, 0]][:0], shown[1])
    h = dets.make(human[0] or [[0, 0, 0, 0]][:0], human[1])
    c = diff.diff(s, h)
    assert (c.kept, c.moved, c.relabeled, c.deleted, c.added, c.true_positives) == expected
    assert (c.shown, c.human) == (len(shown[1]), len(human[1]))


def test_cost_model_defaults_and_overrides():
    c = diff.Correction(shown=4, human=4, kept=1, moved=1, relabeled=1, deleted=1, added=1, true_positives=2)
    model = diff.CostModel()
    assert model.seconds(c) == pytest.approx(2.0 + 1.6 + 5.0 + 3.0 + 2.0 + 7.0)
    conventional = AnnotationCostConfig(draw=35.0)  # the studio.costs section is the cost model
    assert conventional.seconds(c) == pytest.approx(model.seconds(c) + 28.0)
    assert model.from_scratch(3) == pytest.approx(2.0 + 21.0)


def test_round_summaries_group_by_push_round(tmp_path):
    store = Store.open(tmp_path / "s.db")
    studio_state.ensure_schema(store)
    store.add_images(
        [
            {
                "path": f"{i}.jpg",
                "sha256": str(i),
                "size_bytes": 1,
                "width": 10,
                "height": 10,
                "source_group": "g",
            }
            for i in range(3)
        ]
    )
    with store.transaction():
        store.conn.execute(
            "INSERT INTO studio_projects(url, project_id, title, labels) VALUES ('u', 1, 't', '[]')"
        )
        rows = [  # image, round, shown, human, kept, moved, relabeled, deleted, added, tp, seconds
            (1, 0, 2, 2, 1, 1, 0, 0, 0, 2, 8.6),
            (2, 0, 1, 0, 0, 0, 0, 1, 0, 0, 4.0),
            (3, 1, 0, 3, 0, 0, 0, 0, 3, 0, 23.0),
        ]
        for image_id, rnd, shown, human, kept, moved, rel, deleted, added, tp, sec in rows:
            store.conn.execute(
                "INSERT INTO studio_corrections(project, image_id, task_id, annotation_id, round, shown, human, kept,"
                " moved, relabeled, deleted, added, true_positives, clipped, rotated, seconds)"
                " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?)",
                (image_id, image_id, image_id, rnd, shown, human, kept, moved, rel, deleted, added, tp, sec),
            )
    first, second = studio_state.round_summaries(store)
    assert (first["round"], first["images"], first["empty"]) == (0, 2, 1)
    assert first["precision"] == pytest.approx(2 / 3) and first["recall"] == pytest.approx(1.0)
    assert first["seconds"] == pytest.approx(12.6)
    assert second["precision"] is None and second["recall"] == 0.0 and second["added"] == 3
