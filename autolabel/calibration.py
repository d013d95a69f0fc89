"""Per-class pre-label score thresholds that make the student's pre-labels cheapest to correct.

A pre-label box costs human time whatever it is: a kept box is verified, a wrong one deleted, a
missed object drawn (``autolabel.studio.diff.CostModel``). A low threshold shows more true boxes
(fewer drawn) and more false ones (more deleted); a high one the reverse. Which side wins depends
on the class and on how good the student is, so the threshold is chosen per class from pairs of
the student's predictions at a low floor confidence and human labels of the same images: the
earlier rounds' pre-labels with their corrections, and the current student's predictions of the
frozen validation images (``validation_pairs``). The second set matters: the earlier pre-labels
came from older, weaker students whose scores sit lower, and thresholds fitted on them alone were
often worse than the fixed default (``scripts/bench_calibration.py``, BENCHMARKS.md). The
thresholds only decide what is shown to the annotators; no reported metric depends on them.

``calibrate`` minimizes the total estimated correction time of those pairs over a grid of
thresholds, one class at a time (coordinate descent, the other classes held at their current
threshold; two sweeps). The diff is the full one of ``studio.diff`` (relabels included), so the
classes interact only through relabel-vs-delete matches and the sweeps converge quickly. Ties go
to the higher threshold (fewer boxes shown for the same time). With fewer than ``min_pairs``
pairs the default threshold stays.

This module owns the ``prelabel_calibration`` table (the thresholds the loop fitted per round,
``calibrate_round`` / ``recorded_thresholds``); push applies them with ``filter_prelabel``. It sits
above ``studio.diff`` (the cost maths) and below ``studio.push``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autolabel import detections as dets
from autolabel.studio.diff import CostModel, diff

if TYPE_CHECKING:
    import supervision as sv

__all__ = [
    "DEFAULT_THRESHOLD",
    "FLOOR",
    "GRID",
    "Calibration",
    "calibrate",
    "correction_seconds",
    "filter_prelabel",
    "from_scratch_seconds",
]

FLOOR = 0.05  # the student pre-labels at this confidence; the thresholds filter from there
DEFAULT_THRESHOLD = 0.25  # ultralytics' predict default: the fixed baseline
GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
Pair = tuple["sv.Detections", "sv.Detections"]  # (student prediction with confidences, human labels)


@dataclass(frozen=True)
class Calibration:
    thresholds: tuple[float, ...]  # per class id
    seconds: float  # estimated correction time of the calibration pairs at those thresholds
    seconds_default: float  # the same pairs at DEFAULT_THRESHOLD for every class
    pairs: int


def correction_seconds(
    pairs: Sequence[Pair], thresholds: Sequence[float], costs: CostModel | None = None
) -> float:
    """Estimated human time to correct every prediction, filtered at ``thresholds``, into its labels."""
    costs = costs or CostModel()
    total = 0.0
    for prediction, human in pairs:
        total += costs.seconds(diff(dets.apply_class_thresholds(prediction, list(thresholds)), human))
    return round(total, 3)


def from_scratch_seconds(pairs: Sequence[Pair], costs: CostModel | None = None) -> float:
    """The same images labeled with no pre-labels: every box drawn."""
    costs = costs or CostModel()
    return round(sum(costs.from_scratch(len(human)) for _, human in pairs), 3)


def calibrate(
    pairs: Sequence[Pair],
    n_classes: int,
    costs: CostModel | None = None,
    *,
    grid: Sequence[float] = GRID,
    sweeps: int = 2,
    min_pairs: int = 5,
) -> Calibration:
    """The per-class thresholds (from ``grid``) with the lowest total correction time on ``pairs``."""
    costs = costs or CostModel()
    default = (DEFAULT_THRESHOLD,) * n_classes
    base = correction_seconds(pairs, default, costs)
    if len(pairs) < min_pairs or n_classes == 0:
        return Calibration(default, base, base, len(pairs))
    current = list(default)
    # Only images where class c is predicted or labeled change with class c's threshold.
    touching = [[p for p in pairs if _has_class(p, c)] for c in range(n_classes)]
    for _ in range(sweeps):
        changed = False
        for c in range(n_classes):
            if not touching[c]:
                continue
            best_t, best_s = current[c], None
            for t in sorted(grid, reverse=True):  # ties keep the higher threshold
                trial = [*current[:c], t, *current[c + 1 :]]
                seconds = correction_seconds(touching[c], trial, costs)
                if best_s is None or seconds < best_s - 1e-9:
                    best_t, best_s = t, seconds
            if best_t != current[c]:
                current[c], changed = best_t, True
        if not changed:
            break
    thresholds = tuple(float(t) for t in current)
    return Calibration(thresholds, correction_seconds(pairs, thresholds, costs), base, len(pairs))


def _has_class(pair: Pair, class_id: int) -> bool:
    prediction, human = pair
    return bool(np.any(prediction.class_id == class_id)) or bool(np.any(human.class_id == class_id))


# -- the loop's record of the thresholds it used -----------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS prelabel_calibration (
    round INTEGER PRIMARY KEY,       -- the round whose batch was pre-labeled with these thresholds
    thresholds TEXT NOT NULL,        -- JSON list, per class id
    seconds REAL NOT NULL,           -- estimated correction time of the calibration pairs
    seconds_default REAL NOT NULL,   -- the same pairs at DEFAULT_THRESHOLD
    pairs INTEGER NOT NULL           -- human-labeled images with a student pre-label it was fitted on
);
"""
STUDENT_PREFIX = "student:"


def filter_prelabel(prediction: tuple[str, str], thresholds: Sequence[float]) -> tuple[str, str]:
    """What push shows of a stored pre-label (model version, detections JSON): a student's is
    filtered at the round's per-class ``thresholds``, any other is shown as it is."""
    model_version, det_json = prediction
    if not model_version.startswith(STUDENT_PREFIX):
        return prediction

    det = dets.from_json(det_json)
    # a class added after the round's fit has no threshold of its own yet: the default
    limits = list(thresholds) + [DEFAULT_THRESHOLD] * (
        int(det.class_id.max()) + 1 - len(thresholds) if len(det) else 0
    )
    return model_version, dets.to_json(dets.apply_class_thresholds(det, limits))


def pairs_from_store(store, image_ids=None) -> list[Pair]:
    """(newest student pre-label, human labels) for the labeled images the student pre-labeled."""
    labels = store.labels(image_ids)
    predictions = store.latest_predictions(list(labels), model_prefix=STUDENT_PREFIX)
    return [(dets.from_json(predictions[i][1]), dets.from_json(labels[i])) for i in sorted(predictions)]


def calibrate_round(
    store,
    round_index: int,
    costs: CostModel | None = None,
    *,
    extra_pairs: Callable[[], list[Pair]] | None = None,
) -> Calibration:
    """Fit the thresholds for ``round_index`` on every earlier student pre-label that humans
    corrected plus ``extra_pairs()`` (the loop passes the current student on the frozen validation
    set, see ``validation_pairs``), and record them before the batch is pushed; a round already
    fitted (a rerun after a crash) keeps its own."""
    import json

    store.ensure_schema(SCHEMA)
    recorded = recorded_thresholds(store).get(round_index)
    if recorded is not None:
        return recorded
    pairs = pairs_from_store(store) + (extra_pairs() if extra_pairs is not None else [])
    result = calibrate(pairs, len(store.class_names()), costs)
    with store.transaction():
        store.conn.execute(
            "INSERT OR IGNORE INTO prelabel_calibration(round, thresholds, seconds, seconds_default, pairs)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                round_index,
                json.dumps(list(result.thresholds)),
                result.seconds,
                result.seconds_default,
                result.pairs,
            ),
        )
    return result


def recorded_thresholds(store) -> dict[int, Calibration]:
    """round -> the calibration the loop recorded for it."""
    import json

    store.ensure_schema(SCHEMA)
    rows = store.conn.execute(
        "SELECT round, thresholds, seconds, seconds_default, pairs FROM prelabel_calibration ORDER BY round"
    )
    return {r[0]: Calibration(tuple(json.loads(r[1])), r[2], r[3], r[4]) for r in rows}


def validation_pairs(
    workspace, store, weights, *, imgsz: int, device: str = "auto", batch_size: int = 8
) -> list[Pair]:
    """(the student's predictions at ``FLOOR``, human labels) on the frozen validation images.

    The current student has never trained on them, so they show how *this* student's scores
    behave; the earlier rounds' correction diffs were made by an older, weaker student whose
    scores sit lower (measured in BENCHMARKS.md: thresholds fitted on them alone were often worse
    than the fixed default).
    """
    from autolabel.proposers.base import BatchMapper
    from autolabel.proposers.student import StudentProposer

    val = store.images(status="validation")
    labels = store.labels([im.id for im in val])
    val = [im for im in val if im.id in labels]
    if not val:
        return []
    mapper = BatchMapper(
        lambda: StudentProposer(weights, conf=FLOOR, imgsz=imgsz, device=device, batch_size=batch_size)
    )
    pairs: list[Pair] = []
    for start in range(0, len(val), batch_size):
        rows = [
            {"id": im.id, "path": str(workspace.image_root / im.path)}
            for im in val[start : start + batch_size]
        ]
        for row in mapper.map_rows(rows):
            if row["error"] is None:
                pairs.append((dets.from_dict(row["detections"]), dets.from_json(labels[row["id"]])))
    return pairs
