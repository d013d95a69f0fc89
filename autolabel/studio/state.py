"""The Label Studio sync state: the ``studio_*`` tables of the workspace's SQLite and every query on them.

This module is the tables' only owner; push, pull, the loop and ``status`` call its typed functions.

* ``studio_projects``: the Label Studio project each (server, title) pushes into, its labels in
  class-id order and the server time of the newest task update already pulled.
* ``studio_tasks``: one row per (project, image). A row is written as ``pending`` (no task id)
  before its import batch is sent and becomes ``pushed`` with the task id once the answer is in.
  A rerun after a crash finds ``pending`` rows and reconciles them against the server (every task
  carries ``autolabel_image_id`` in its data), so an interrupted push never creates a second task.
* ``studio_annotations``: the raw annotation JSON exactly as the server returned it, stored before
  any conversion; its ``state`` says whether it became labels (``done``), could not (``error``,
  e.g. unknown labels; retried on the next pull) or the task was skipped (``skipped``).
* ``studio_uploads``: where the server serves the uploaded copy of an image (upload mode).
* ``studio_corrections``: the diff of each pulled image against the pre-label it was shown.

Readers that may run before anything was pushed (``quarantined``, ``skipped_image_ids``,
``round_summaries``) answer empty when the tables do not exist yet, and create nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from typing import NamedTuple, TypedDict

from autolabel.config import AnnotationCostConfig
from autolabel.studio.records import CorrectionRecord, RoundSummary

SCHEMA = """
CREATE TABLE IF NOT EXISTS studio_projects (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    project_id INTEGER NOT NULL,       -- Label Studio's project id on that server
    title TEXT NOT NULL,
    labels TEXT NOT NULL,              -- JSON list: the label config's labels, in class-id order
    pulled_until TEXT,                 -- server time of the newest task update already pulled
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    UNIQUE (url, project_id)
);
CREATE TABLE IF NOT EXISTS studio_tasks (
    project INTEGER NOT NULL REFERENCES studio_projects(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    sha256 TEXT NOT NULL,
    task_id INTEGER,                   -- NULL while the import batch is in flight
    state TEXT NOT NULL,               -- pending | pushed | deleted
    round INTEGER NOT NULL,            -- meta 'round' when pushed
    model_version TEXT,
    shown TEXT,                        -- detections JSON shown as the pre-label (NULL: none yet)
    pushed_at TEXT,
    PRIMARY KEY (project, image_id)
);
CREATE INDEX IF NOT EXISTS studio_tasks_task ON studio_tasks(project, task_id);
CREATE TABLE IF NOT EXISTS studio_annotations (
    project INTEGER NOT NULL REFERENCES studio_projects(id),
    task_id INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    annotation_id INTEGER NOT NULL,
    annotation_updated TEXT NOT NULL,
    raw TEXT NOT NULL,                 -- the annotation exactly as Label Studio returned it
    state TEXT NOT NULL,               -- pending | done | error | skipped
    error TEXT,
    pulled_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (project, task_id)
);
CREATE TABLE IF NOT EXISTS studio_uploads (
    project INTEGER NOT NULL REFERENCES studio_projects(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    url TEXT NOT NULL,                 -- where the server serves the uploaded copy
    PRIMARY KEY (project, image_id)
);
CREATE TABLE IF NOT EXISTS studio_corrections (
    project INTEGER NOT NULL REFERENCES studio_projects(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    task_id INTEGER NOT NULL,
    annotation_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    shown INTEGER NOT NULL,            -- pre-label boxes
    human INTEGER NOT NULL,            -- boxes after correction
    kept INTEGER NOT NULL,
    moved INTEGER NOT NULL,
    relabeled INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    added INTEGER NOT NULL,
    true_positives INTEGER NOT NULL,   -- pre-label boxes matching a human box (same class, IoU >= 0.5)
    clipped INTEGER NOT NULL,
    rotated INTEGER NOT NULL,
    seconds REAL NOT NULL,             -- estimated human time (diff.CostModel)
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (project, image_id)
);
"""


def ensure_schema(store) -> None:
    store.ensure_schema(SCHEMA)


def _has_table(store, name: str) -> bool:
    row = store.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


# -- rows -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Project:
    key: int  # studio_projects.id
    project_id: int  # Label Studio's id
    url: str
    title: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    image_id: int
    task_id: int | None
    state: str  # pending | pushed | deleted
    model_version: str | None
    shown: str | None  # detections JSON shown as the pre-label


@dataclass(frozen=True)
class PendingTask:
    image_id: int
    sha256: str
    shown: str | None


class SeenAnnotation(NamedTuple):
    annotation_id: int  # -1: the task was skipped
    updated: str


@dataclass(frozen=True)
class RawAnnotation:
    """An annotation as pulled, before conversion (state ``pending``, or ``skipped``)."""

    task_id: int
    image_id: int
    annotation_id: int
    updated: str
    raw: str
    state: str


@dataclass(frozen=True)
class Unconverted:
    """A stored annotation still to become labels, with the pre-label its task showed."""

    task_id: int
    image_id: int
    annotation_id: int
    raw: str
    shown: str | None
    round: int


class Quarantined(TypedDict):
    task_id: int
    image_id: int
    path: str
    reason: str | None


# -- projects -------------------------------------------------------------------------------------
def _project_row(store, url: str, title: str):
    return store.conn.execute(
        "SELECT id, project_id, url, title, labels FROM studio_projects WHERE url = ? AND title = ?"
        " ORDER BY id DESC LIMIT 1",
        (url, title),
    ).fetchone()


def _as_project(row) -> Project:
    return Project(key=row[0], project_id=row[1], url=row[2], title=row[3], labels=tuple(json.loads(row[4])))


def find_project(store, url: str, title: str) -> Project | None:
    ensure_schema(store)
    row = _project_row(store, url, title)
    return _as_project(row) if row else None


def add_project(store, url: str, project_id: int, title: str, labels: list[str]) -> Project:
    """Record the project (kept if already recorded) and return the newest one of that title."""
    with store.transaction():
        store.conn.execute(
            "INSERT OR IGNORE INTO studio_projects(url, project_id, title, labels) VALUES (?, ?, ?, ?)",
            (url, project_id, title, json.dumps(labels)),
        )
    return _as_project(_project_row(store, url, title))


def set_project_labels(store, project: Project, labels: list[str]) -> Project:
    with store.transaction():
        store.conn.execute(
            "UPDATE studio_projects SET labels = ? WHERE id = ?", (json.dumps(labels), project.key)
        )
    return Project(project.key, project.project_id, project.url, project.title, tuple(labels))


def pulled_until(store, project: Project) -> str | None:
    row = store.conn.execute(
        "SELECT pulled_until FROM studio_projects WHERE id = ?", (project.key,)
    ).fetchone()
    return row[0] if row else None


def set_pulled_until(store, project: Project, stamp: str) -> None:
    with store.transaction():
        store.conn.execute("UPDATE studio_projects SET pulled_until = ? WHERE id = ?", (stamp, project.key))


# -- tasks ----------------------------------------------------------------------------------------
def tasks_by_image(store, project: Project) -> dict[int, Task]:
    rows = store.conn.execute(
        "SELECT image_id, task_id, state, model_version, shown FROM studio_tasks WHERE project = ?",
        (project.key,),
    )
    return {r[0]: Task(*r) for r in rows}


def pushed_tasks(store, project: Project) -> dict[int, int]:
    """task id -> image id of the project's pushed tasks."""
    rows = store.conn.execute(
        "SELECT task_id, image_id FROM studio_tasks WHERE project = ? AND state = 'pushed'", (project.key,)
    )
    return {r[0]: r[1] for r in rows}


def mark_pushed_in_review(store, project: Project) -> None:
    """A push killed after creating tasks but before marking their images: those are in review."""
    pushed = [
        r[0]
        for r in store.conn.execute(
            "SELECT image_id FROM studio_tasks WHERE project = ? AND state = 'pushed'", (project.key,)
        )
    ]
    store.set_status(pushed, "in_review", only_from=("unlabeled", "proposed"))


def record_pending(store, project: Project, batch: Iterable[tuple], round_index: int) -> None:
    """Persist intent: these (image, pre-label or None) are about to become tasks (kept if recorded)."""
    with store.transaction():
        for image, prelabel in batch:
            model_version, shown = prelabel if prelabel is not None else (None, None)
            store.conn.execute(
                "INSERT INTO studio_tasks(project, image_id, sha256, task_id, state, round, model_version, shown)"
                " VALUES (?, ?, ?, NULL, 'pending', ?, ?, ?) ON CONFLICT(project, image_id) DO NOTHING",
                (project.key, image.id, image.sha256, round_index, model_version, shown),
            )


def pending_tasks(store, project: Project) -> list[PendingTask]:
    rows = store.conn.execute(
        "SELECT image_id, sha256, shown FROM studio_tasks WHERE project = ? AND state = 'pending'",
        (project.key,),
    )
    return [PendingTask(*r) for r in rows]


def mark_pushed(
    store, project: Project, task_ids: Iterable[tuple[int, int]], *, forget_shown: Iterable[int] = ()
) -> None:
    """(image id, task id) pairs are tasks on the server now; ``forget_shown`` images lost their
    pre-label on the way (shown again through the replace path)."""
    forget = set(forget_shown)
    with store.transaction():
        for image_id, task_id in task_ids:
            store.conn.execute(
                "UPDATE studio_tasks SET task_id = ?, state = 'pushed', pushed_at = datetime('now')"
                + (", model_version = NULL, shown = NULL" if image_id in forget else "")
                + " WHERE project = ? AND image_id = ?",
                (task_id, project.key, image_id),
            )


def drop_pending(store, project: Project, image_ids: Iterable[int]) -> None:
    with store.transaction():
        store.conn.executemany(
            "DELETE FROM studio_tasks WHERE project = ? AND image_id = ? AND state = 'pending'",
            [(project.key, i) for i in image_ids],
        )


def set_shown(
    store, project: Project, shown: Iterable[tuple[int, tuple[str, str]]], round_index: int
) -> None:
    """The pre-labels (image id, (model version, detections JSON)) now shown on existing tasks."""
    with store.transaction():
        for image_id, (model_version, det_json) in shown:
            store.conn.execute(
                "UPDATE studio_tasks SET model_version = ?, shown = ?, round = ?, pushed_at = datetime('now')"
                " WHERE project = ? AND image_id = ?",
                (model_version, det_json, round_index, project.key, image_id),
            )


def mark_deleted(store, project: Project, tasks: Iterable[tuple[int, int]]) -> None:
    """(task id, image id) of tasks deleted in Label Studio: remembered, and an image still in
    review goes back to the pool for a later push."""
    with store.transaction():
        for task_id, image_id in tasks:
            store.conn.execute(
                "UPDATE studio_tasks SET state = 'deleted' WHERE project = ? AND task_id = ?",
                (project.key, task_id),
            )
            store.set_status([image_id], "proposed", only_from=("in_review",))


# -- uploads --------------------------------------------------------------------------------------
def uploads(store, project: Project) -> dict[int, str]:
    """image id -> the URL its uploaded copy is served at."""
    rows = store.conn.execute("SELECT image_id, url FROM studio_uploads WHERE project = ?", (project.key,))
    return {r[0]: r[1] for r in rows}


def record_uploads(store, project: Project, urls: dict[int, str]) -> None:
    with store.transaction():
        for image_id, url in urls.items():
            store.conn.execute(
                "INSERT OR REPLACE INTO studio_uploads(project, image_id, url) VALUES (?, ?, ?)",
                (project.key, image_id, url),
            )


# -- annotations ----------------------------------------------------------------------------------
def annotated_image_ids(store, project: Project) -> set[int]:
    rows = store.conn.execute("SELECT image_id FROM studio_annotations WHERE project = ?", (project.key,))
    return {r[0] for r in rows}


def seen_annotations(store, project: Project) -> dict[int, SeenAnnotation]:
    """task id -> the annotation already pulled for it (id and update time)."""
    rows = store.conn.execute(
        "SELECT task_id, annotation_id, annotation_updated FROM studio_annotations WHERE project = ?",
        (project.key,),
    )
    return {r[0]: SeenAnnotation(r[1], r[2]) for r in rows}


def store_raw(store, project: Project, annotations: list[RawAnnotation]) -> None:
    """Raw annotations, as pulled, before any conversion (replacing the task's earlier one)."""
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO studio_annotations(project, task_id, image_id, annotation_id, annotation_updated,"
            " raw, state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project, task_id) DO UPDATE SET"
            " annotation_id = excluded.annotation_id, annotation_updated = excluded.annotation_updated,"
            " raw = excluded.raw, state = excluded.state, error = NULL, pulled_at = datetime('now')",
            [(project.key, *astuple(a)) for a in annotations],
        )


def unconverted(store, project: Project) -> list[Unconverted]:
    """Stored annotations not converted yet, earlier failures included."""
    rows = store.conn.execute(
        "SELECT a.task_id, a.image_id, a.annotation_id, a.raw, t.shown, t.round FROM studio_annotations a"
        " JOIN studio_tasks t ON t.project = a.project AND t.image_id = a.image_id"
        " WHERE a.project = ? AND a.state IN ('pending', 'error')",
        (project.key,),
    ).fetchall()
    return [Unconverted(*r) for r in rows]


def set_annotation_state(store, project: Project, task_id: int, state: str, error: str | None) -> None:
    with store.transaction():
        store.conn.execute(
            "UPDATE studio_annotations SET state = ?, error = ? WHERE project = ? AND task_id = ?",
            (state, error, project.key, task_id),
        )


def forget_annotation(store, project: Project, task_id: int, image_id: int) -> None:
    """An annotation deleted in Label Studio: its raw JSON and its correction go."""
    with store.transaction():
        store.conn.execute(
            "DELETE FROM studio_annotations WHERE project = ? AND task_id = ?", (project.key, task_id)
        )
        store.conn.execute(
            "DELETE FROM studio_corrections WHERE project = ? AND image_id = ?", (project.key, image_id)
        )


def quarantined(store) -> list[Quarantined]:
    """Annotations held back from the labels, with the reason (for ``pull`` and ``status``)."""
    if not _has_table(store, "studio_annotations"):
        return []
    rows = store.conn.execute(
        "SELECT a.task_id, a.image_id, i.path, a.error FROM studio_annotations a JOIN images i ON i.id = a.image_id"
        " WHERE a.state = 'error' ORDER BY a.image_id"
    )
    return [Quarantined(task_id=t, image_id=i, path=p, reason=e) for t, i, p, e in rows]


def skipped_image_ids(store) -> set[int]:
    """Images whose task an annotator skipped (in any project)."""
    if not _has_table(store, "studio_annotations"):
        return set()
    rows = store.conn.execute("SELECT image_id FROM studio_annotations WHERE state = 'skipped'")
    return {r[0] for r in rows}


# -- corrections ----------------------------------------------------------------------------------
def record_correction(store, project: Project, correction: CorrectionRecord) -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO studio_corrections(project, image_id, task_id, annotation_id, round, shown, human,"
            " kept, moved, relabeled, deleted, added, true_positives, clipped, rotated, seconds)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project, image_id) DO UPDATE SET"
            " task_id = excluded.task_id, annotation_id = excluded.annotation_id, round = excluded.round,"
            " shown = excluded.shown, human = excluded.human, kept = excluded.kept, moved = excluded.moved,"
            " relabeled = excluded.relabeled, deleted = excluded.deleted, added = excluded.added,"
            " true_positives = excluded.true_positives, clipped = excluded.clipped,"
            " rotated = excluded.rotated, seconds = excluded.seconds, created_at = datetime('now')",
            (project.key, *astuple(correction)),
        )


def round_summaries(store, costs: AnnotationCostConfig | None = None) -> list[RoundSummary]:
    """One summary per round (meta 'round' at push time) over every pulled image of that round.

    precision and recall are the proposer's against the human (None when undefined); ``seconds``
    is the estimated human time, computed with the cost model in force at pull time;
    ``seconds_from_scratch`` the same boxes all drawn (``costs.draw`` each).
    """
    if not _has_table(store, "studio_corrections"):
        return []
    costs = costs or AnnotationCostConfig()
    rows = store.conn.execute(
        "SELECT round, COUNT(*), SUM(human = 0), SUM(shown), SUM(human), SUM(kept), SUM(moved), SUM(relabeled),"
        " SUM(deleted), SUM(added), SUM(true_positives), SUM(seconds) FROM studio_corrections"
        " GROUP BY round ORDER BY round"
    ).fetchall()
    out: list[RoundSummary] = []
    for rnd, images, empty, shown, human, kept, moved, relabeled, deleted, added, tp, seconds in rows:
        out.append(
            RoundSummary(
                round=int(rnd),
                images=int(images),
                empty=int(empty or 0),
                boxes_shown=int(shown or 0),
                boxes_human=int(human or 0),
                kept=int(kept or 0),
                moved=int(moved or 0),
                relabeled=int(relabeled or 0),
                deleted=int(deleted or 0),
                added=int(added or 0),
                precision=(tp / shown) if shown else None,
                recall=(tp / human) if human else None,
                seconds=round(float(seconds or 0.0), 1),
                seconds_from_scratch=round(images * costs.per_image + (human or 0) * costs.draw, 1),
                seconds_per_image=round(float(seconds or 0.0) / images, 2) if images else None,
            )
        )
    return out


def correction_examples(store, limit: int = 6) -> list[tuple]:
    """(image_id, round, shown JSON, kept, moved, relabeled, deleted, added), most human edits first."""
    if not _has_table(store, "studio_corrections"):
        return []
    return store.conn.execute(
        "SELECT c.image_id, c.round, t.shown, c.kept, c.moved, c.relabeled, c.deleted, c.added FROM"
        " studio_corrections c JOIN studio_tasks t USING (project, image_id)"
        " ORDER BY c.moved + c.relabeled + c.deleted + c.added DESC, c.round, c.image_id LIMIT ?",
        (limit,),
    ).fetchall()
