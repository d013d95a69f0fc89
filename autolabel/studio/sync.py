"""Push pre-labels to Label Studio and pull human corrections back, without loss or duplicates.

State lives in the workspace's SQLite (tables below), written before and after every call:

* ``studio_tasks``: one row per (project, image). A row is written as ``pending`` (no task id)
  before its import batch is sent and becomes ``pushed`` with the task id once the answer is in.
  A rerun after a crash finds ``pending`` rows and reconciles them against the server (every task
  carries ``autolabel_image_id`` in its data), so an interrupted push never creates a second task.
* ``studio_annotations``: the raw annotation JSON exactly as the server returned it, stored before
  any conversion; its ``state`` says whether it became labels (``done``), could not (``error``,
  e.g. unknown labels; retried on the next pull) or the task was skipped (``skipped``).
* ``studio_corrections``: the diff of each pulled image against the pre-label it was shown.

Pull is incremental: only tasks the server updated since the last pull (minus a safety overlap)
are fetched, and an annotation whose id and ``updated_at`` are unchanged is not converted again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from autolabel import detections as dets
from autolabel.errors import AutolabelError
from autolabel.formats import labelstudio as lsfmt

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

# Tasks updated this long before the last pull's newest update are fetched again (clock skew,
# updates committed while the previous pull was paging); unchanged annotations are skipped.
PULL_OVERLAP = timedelta(seconds=120)
MAX_IMPORT_ATTEMPTS = 5
# From this many changed tasks on, pull reads them through one JSON export call (about 3x faster
# per task than the paged task listing with annotations).
EXPORT_THRESHOLD = 200


@dataclass(frozen=True)
class Project:
    key: int  # studio_projects.id
    project_id: int  # Label Studio's id
    url: str
    title: str
    labels: tuple[str, ...]


@dataclass
class PushSummary:
    project_id: int = 0
    created: int = 0
    recovered: int = 0  # tasks found on the server after an interrupted import
    replaced: int = 0  # existing tasks whose pre-labels were replaced
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    labels_added: list[str] = field(default_factory=list)


@dataclass
class PullSummary:
    fetched: int = 0  # tasks the server returned as updated
    labeled: int = 0  # images whose labels were (re)written
    empty: int = 0  # of those, verified "no objects"
    skipped: int = 0  # tasks skipped (cancelled) by the annotator
    unchanged: int = 0
    clipped: int = 0
    rotated: int = 0
    deleted: int = 0  # tasks deleted in Label Studio
    foreign: int = 0  # tasks not created by autolabel (ignored)
    unknown_labels: dict[str, int] = field(default_factory=dict)  # label -> annotations using it
    quarantined: list[tuple[int, str]] = field(default_factory=list)  # (image id, why) held back, not labels
    withdrawn: int = 0  # annotations deleted in Label Studio: their labels removed, images back in review

    def error_message(self) -> str | None:
        if not self.unknown_labels:
            return None
        names = ", ".join(f"'{n}'" for n in sorted(self.unknown_labels))
        count = sum(self.unknown_labels.values())
        return (
            f"{count} annotations use labels that are not classes of this workspace: {names}; "
            "add them to the ontology (classes append) or relabel them in Label Studio, then pull again"
        )


def ensure_schema(store) -> None:
    store.ensure_schema(SCHEMA)


def current_round(store) -> int:
    return int(store.get_meta("round", "0") or 0)


# -- paths --------------------------------------------------------------------------------------
def safe_relative_path(image_root: Path, rel_path: str) -> Path:
    """The image's absolute path; refuses paths that leave the image root (``..``, absolute, symlinks)."""
    root = Path(image_root).resolve()
    if not rel_path or Path(rel_path).is_absolute():
        raise AutolabelError(f"image path {rel_path!r} is not relative to the image root")
    full = (root / rel_path).resolve()
    if not full.is_relative_to(root):
        raise AutolabelError(f"image path {rel_path!r} leaves the image root {root}")
    return full


def local_files_url(image_root: Path, document_root: Path, rel_path: str) -> str:
    full = safe_relative_path(image_root, rel_path)
    doc = Path(document_root).resolve()
    if not full.is_relative_to(doc):
        raise AutolabelError(f"image {rel_path!r} is outside the server's local-files root {doc}")
    return "/data/local-files/?d=" + quote(full.relative_to(doc).as_posix(), safe="/")


# -- project --------------------------------------------------------------------------------------
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


OWNER_MARK = "autolabel workspace "


def owner_mark(store) -> str:
    """What a project's description says when this workspace owns it."""
    return f"{OWNER_MARK}{store.workspace_id()}"


def project_owner(description: str | None) -> str | None:
    """The workspace id a project's description names, or None (not made by autolabel, or older)."""
    for line in (description or "").splitlines():
        if line.startswith(OWNER_MARK):
            return line[len(OWNER_MARK) :].strip() or None
    return None


def check_owner(store, client, project: Project, share: bool = False) -> None:
    """Refuse to sync with a project another workspace owns (a shared title, a copied state.db)."""
    if share:
        return
    remote = client.get_project(project.project_id)
    if remote is None:
        raise AutolabelError(
            f"Label Studio project {project.project_id} ('{project.title}') no longer exists on {client.url}: "
            "set studio.project_title to a new title to push into a new project"
        )
    owner = project_owner(remote.get("description"))
    if owner is not None and owner != store.workspace_id():
        raise AutolabelError(
            f"Label Studio project {project.project_id} belongs to another autolabel workspace ({owner[:8]}); "
            "this workspace will not push to or pull from it (set studio.share_project: true to share it)"
        )


def ensure_project(
    store, client, title: str, class_names: list[str], image_root: Path | None, *, share: bool = False
) -> tuple[Project, list[str]]:
    """The project for this workspace (created or found) with every class as a label, in id order.

    A workspace owns its project: the project's description names the workspace id. A project with
    the same title owned by another workspace (or not made by autolabel) is left alone and this
    workspace gets its own (the title plus its id), unless ``share`` asks to use it.
    """
    if not 3 <= len(title) <= 50:
        raise AutolabelError(
            f"studio.project_title must have 3 to 50 characters (Label Studio's limit): {title!r}"
        )
    ensure_schema(store)
    row = _project_row(store, client.url, title)
    if row is not None:
        project = _as_project(row)
        check_owner(store, client, project, share)
    else:
        mine = owner_mark(store)
        remote = client.find_project(title)
        if (
            remote is not None
            and not share
            and project_owner(remote.get("description")) != store.workspace_id()
        ):
            title_on_server = f"{title[:40]} {store.workspace_id()[:8]}"  # someone else's: make our own
            remote = client.find_project(title_on_server)
        else:
            title_on_server = title
        if remote is None:
            description = f"Pre-labels from autolabel; pull corrections with 'autolabel pull'.\n{mine}"
            try:
                remote = client.create_project(title_on_server, lsfmt.label_config(class_names), description)
            except Exception:
                remote = client.find_project(title_on_server)  # created before the answer was lost?
                if remote is None:
                    raise
        labels = _config_labels(remote["label_config"])
        with store.transaction():
            store.conn.execute(
                "INSERT OR IGNORE INTO studio_projects(url, project_id, title, labels) VALUES (?, ?, ?, ?)",
                (client.url, remote["id"], title, json.dumps(labels)),
            )
        project = _as_project(_project_row(store, client.url, title))
    added: list[str] = []
    if list(project.labels) != list(class_names):
        if list(class_names[: len(project.labels)]) != list(project.labels) and project.labels:
            raise AutolabelError(
                f"the project's labels {list(project.labels)} are not a prefix of the workspace classes "
                f"{class_names}: class order is fixed once a project exists"
            )
        added = [n for n in class_names if n not in project.labels]
        client.set_label_config(project.project_id, lsfmt.label_config(class_names))
        with store.transaction():
            store.conn.execute(
                "UPDATE studio_projects SET labels = ? WHERE id = ?", (json.dumps(class_names), project.key)
            )
        project = Project(project.key, project.project_id, project.url, project.title, tuple(class_names))
    if image_root is not None:
        client.ensure_local_storage(project.project_id, image_root)
    return project, added


def _config_labels(label_config: str) -> list[str]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return []
    labels = []
    for tag in root.iter():
        if tag.tag == "RectangleLabels":
            labels += [lab.get("value") for lab in tag.iter("Label") if lab.get("value") is not None]
    return labels


def project_labels(label_config: str) -> list[str]:
    return _config_labels(label_config)


# -- push -------------------------------------------------------------------------------------------
def push_candidates(store, image_ids: Iterable[int] | None = None):
    """Images to have humans look at: proposed / in review, plus validation images without labels."""
    if image_ids is not None:
        return [im for im in store.images(ids=list(image_ids)) if im.status != "error"]
    labeled = set(store.labels())
    chosen = store.images(status=("proposed", "in_review"))
    chosen += [im for im in store.images(status="validation") if im.id not in labeled]
    return sorted(chosen, key=lambda im: im.id)


def push(
    store,
    client,
    *,
    image_root: Path,
    document_root: Path,
    title: str,
    batch_size: int = 500,
    image_ids: Iterable[int] | None = None,
    advance: Callable[[int], None] | None = None,
    image_mode: str = "local",
    student_thresholds: Sequence[float] | None = None,
    share: bool = False,
) -> PushSummary:
    """Create one task per candidate image (with its newest pre-label) and replace stale pre-labels.

    ``student_thresholds`` (per class id) filter the student's pre-labels (stored at a low floor
    confidence) before they are shown; what is shown is what the correction diff is taken against.

    ``image_mode`` "local": tasks point at ``/data/local-files/`` URLs below ``document_root`` and
    the project gets a local-files storage on ``image_root`` (the server must see the files);
    "upload": the images are uploaded to the server first (remote servers).
    """
    if image_mode not in ("local", "upload"):
        raise AutolabelError(f"image mode must be 'local' or 'upload', not {image_mode!r}")
    class_names = store.class_names()
    if not class_names:
        raise AutolabelError("the workspace has no classes yet: run 'autolabel propose' first")
    ensure_schema(store)
    project, added = ensure_project(
        store, client, title, class_names, image_root if image_mode == "local" else None, share=share
    )
    summary = PushSummary(project_id=project.project_id, labels_added=added)
    summary.recovered += reconcile(store, client, project)
    mark_pushed_in_review(store, project)
    advance = advance or (lambda n=1: None)
    round_index = current_round(store)

    candidates = push_candidates(store, image_ids)
    predictions = store.latest_predictions([im.id for im in candidates])
    if student_thresholds is not None:
        predictions = {i: _filtered(p, student_thresholds) for i, p in predictions.items()}
    rows = {
        r[0]: r
        for r in store.conn.execute(
            "SELECT image_id, task_id, state, model_version, shown FROM studio_tasks WHERE project = ?",
            (project.key,),
        )
    }
    annotated = {
        r[0]
        for r in store.conn.execute(
            "SELECT image_id FROM studio_annotations WHERE project = ?", (project.key,)
        )
    }
    new, replace = [], []
    for image in candidates:
        row = rows.get(image.id)
        pred = predictions.get(image.id)
        if row is None:
            try:
                url = (
                    local_files_url(image_root, document_root, image.path) if image_mode == "local" else None
                )
                if url is None:
                    safe_relative_path(image_root, image.path)
            except AutolabelError as exc:
                summary.refused.append((image.path, str(exc)))
                continue
            new.append((image, url, pred))
        elif (
            row[2] == "pushed" and pred is not None and image.id not in annotated and (row[3], row[4]) != pred
        ):
            replace.append((image, row[1], pred))
        else:
            summary.unchanged += 1
    advance(summary.unchanged)

    for start in range(0, len(new), batch_size):
        batch = new[start : start + batch_size]
        if image_mode == "upload":
            batch = _with_uploaded_urls(store, client, project, image_root, batch)
        summary.created += _import_batch(store, client, project, batch, class_names, round_index, summary)
        advance(len(batch))
    for start in range(0, len(replace), batch_size):
        batch = replace[start : start + batch_size]
        _replace_predictions(store, client, project, batch, class_names, round_index)
        summary.replaced += len(batch)
        advance(len(batch))
    pushed = [image.id for image, _, _ in new] + [image.id for image, _, _ in replace]
    store.set_status(pushed, "in_review", only_from=("unlabeled", "proposed"))
    return summary


def _filtered(prediction: tuple[str, str], thresholds: Sequence[float]) -> tuple[str, str]:
    from autolabel.calibration import DEFAULT_THRESHOLD, STUDENT_PREFIX

    model_version, det_json = prediction
    if not model_version.startswith(STUDENT_PREFIX):
        return prediction

    det = dets.from_json(det_json)
    # a class added after the round's fit has no threshold of its own yet: the default
    limits = list(thresholds) + [DEFAULT_THRESHOLD] * (
        int(det.class_id.max()) + 1 - len(thresholds) if len(det) else 0
    )
    return model_version, dets.to_json(dets.apply_class_thresholds(det, limits))


UPLOAD_CHUNK = 50


def _with_uploaded_urls(store, client, project: Project, image_root: Path, batch):
    """Upload the batch's images that have no uploaded copy yet; the batch with their URLs."""
    known = {
        r[0]: r[1]
        for r in store.conn.execute(
            "SELECT image_id, url FROM studio_uploads WHERE project = ?", (project.key,)
        )
    }
    missing = [image for image, _, _ in batch if image.id not in known]
    for start in range(0, len(missing), UPLOAD_CHUNK):
        chunk = missing[start : start + UPLOAD_CHUNK]
        names = {f"{image.id}_{image.sha256[:12]}{Path(image.path).suffix.lower()}": image for image in chunk}
        files = [
            (name, safe_relative_path(image_root, image.path).read_bytes()) for name, image in names.items()
        ]
        urls = client.upload_files(project.project_id, files)
        lost = sorted(set(names) - set(urls))
        if lost:
            raise AutolabelError(
                f"Label Studio did not keep {len(lost)} uploaded images (e.g. {lost[0]}); rerun push"
            )
        with store.transaction():
            for name, image in names.items():
                store.conn.execute(
                    "INSERT OR REPLACE INTO studio_uploads(project, image_id, url) VALUES (?, ?, ?)",
                    (project.key, image.id, urls[name]),
                )
                known[image.id] = urls[name]
    return [(image, known[image.id], pred) for image, _, pred in batch]


def _task_payload(image, url: str, pred, class_names: list[str], workspace_id: str) -> dict:
    task = {
        "data": {
            lsfmt.IMAGE_KEY: url,
            "autolabel_image_id": image.id,
            "autolabel_sha256": image.sha256,
            "autolabel_path": image.path,
            "autolabel_workspace": workspace_id,
        }
    }
    if pred is not None and image.width and image.height:
        model_version, det_json = pred
        det = dets.from_json(det_json)
        task["predictions"] = [lsfmt.prediction(det, class_names, image.width, image.height, model_version)]
    return task


def _import_batch(store, client, project: Project, batch, class_names, round_index: int, summary) -> int:
    from autolabel.studio.client import UncertainWrite

    # 1. Persist intent: these images are about to become tasks.
    with store.transaction():
        for image, _, pred in batch:
            model_version, shown = pred if pred is not None else (None, None)
            store.conn.execute(
                "INSERT INTO studio_tasks(project, image_id, sha256, task_id, state, round, model_version, shown)"
                " VALUES (?, ?, ?, NULL, 'pending', ?, ?, ?) ON CONFLICT(project, image_id) DO NOTHING",
                (project.key, image.id, image.sha256, round_index, model_version, shown),
            )
    remaining = list(batch)
    workspace_id = store.workspace_id()
    created = 0
    for attempt in range(MAX_IMPORT_ATTEMPTS):
        payload = [
            _task_payload(image, url, pred, class_names, workspace_id) for image, url, pred in remaining
        ]
        try:
            task_ids = client.import_tasks(project.project_id, payload)
        except UncertainWrite:
            import time

            time.sleep(min(0.5 * 2**attempt, 10.0))
            summary.recovered += reconcile(store, client, project)
            still = {
                r[0]
                for r in store.conn.execute(
                    "SELECT image_id FROM studio_tasks WHERE project = ? AND state = 'pending'",
                    (project.key,),
                )
            }
            done_now = [b for b in remaining if b[0].id not in still]
            created += len(done_now)
            remaining = [b for b in remaining if b[0].id in still]
            if not remaining:
                return created
            # reconcile() dropped rows it could not find; persist the intent again before retrying.
            with store.transaction():
                for image, _, pred in remaining:
                    model_version, shown = pred if pred is not None else (None, None)
                    store.conn.execute(
                        "INSERT INTO studio_tasks(project, image_id, sha256, task_id, state, round, model_version,"
                        " shown) VALUES (?, ?, ?, NULL, 'pending', ?, ?, ?) ON CONFLICT(project, image_id) DO NOTHING",
                        (project.key, image.id, image.sha256, round_index, model_version, shown),
                    )
            continue
        # 2. Persist the outcome: the task ids, in the same order as the batch.
        with store.transaction():
            for (image, _, _), task_id in zip(remaining, task_ids):
                store.conn.execute(
                    "UPDATE studio_tasks SET task_id = ?, state = 'pushed', pushed_at = datetime('now')"
                    " WHERE project = ? AND image_id = ?",
                    (task_id, project.key, image.id),
                )
        return created + len(remaining)
    from autolabel.studio.client import StudioUnavailable

    raise StudioUnavailable(f"importing tasks into {client.url} keeps failing; rerun 'autolabel push' later")


def mark_pushed_in_review(store, project: Project) -> None:
    """A push killed after creating tasks but before marking their images: those are in review."""
    pushed = [
        r[0]
        for r in store.conn.execute(
            "SELECT image_id FROM studio_tasks WHERE project = ? AND state = 'pushed'", (project.key,)
        )
    ]
    store.set_status(pushed, "in_review", only_from=("unlabeled", "proposed"))


def reconcile(store, client, project: Project) -> int:
    """Resolve ``pending`` rows after an interrupted push: record tasks the server has, drop the rest.

    Returns how many pending images turned out to have been created already. Duplicate tasks for
    one image (which only an outside re-import could cause) keep the lowest id; the others are deleted.
    """
    rows = store.conn.execute(
        "SELECT image_id, shown, sha256 FROM studio_tasks WHERE project = ? AND state = 'pending'",
        (project.key,),
    ).fetchall()
    pending = {r[0]: r[1] for r in rows}
    sha = {r[0]: r[2] for r in rows}
    if not pending:
        return 0
    workspace_id = store.workspace_id()
    found: dict[int, tuple[int, int]] = {}  # image_id -> (task_id, total_predictions)
    annotated: dict[int, int] = {}  # task_id -> annotations: such a task is never deleted
    duplicates: list[int] = []
    for task in client.iter_tasks(project.project_id, fields="task_only"):
        data = task.get("data") or {}
        image_id = data.get("autolabel_image_id")
        # A task is this image's only when workspace and content agree, never by the id alone.
        if image_id not in pending or data.get("autolabel_workspace") not in (workspace_id, None):
            continue  # None: a task pushed before tasks carried the workspace id (the hash still decides)
        if data.get("autolabel_sha256") != sha[image_id]:
            continue
        tid = int(task["id"])
        annotated[tid] = int(task.get("total_annotations") or 0) + int(task.get("cancelled_annotations") or 0)
        if image_id in found:
            first = found[image_id][0]
            # keep the annotated one (or the older), delete only an unannotated duplicate
            keep, drop = sorted([first, tid], key=lambda t: (-annotated[t], t))
            if annotated[drop] == 0:
                duplicates.append(drop)
            if keep == tid:
                found[image_id] = (tid, int(task.get("total_predictions") or 0))
        else:
            found[image_id] = (tid, int(task.get("total_predictions") or 0))
    for tid in duplicates:
        client.delete_task(tid)
    with store.transaction():
        for image_id, (tid, n_predictions) in found.items():
            # A task that lost its prediction mid-import gets it again through the replace path.
            shown_ok = pending[image_id] is None or n_predictions > 0
            store.conn.execute(
                "UPDATE studio_tasks SET task_id = ?, state = 'pushed', pushed_at = datetime('now')"
                + ("" if shown_ok else ", model_version = NULL, shown = NULL")
                + " WHERE project = ? AND image_id = ?",
                (tid, project.key, image_id),
            )
        missing = [i for i in pending if i not in found]
        store.conn.executemany(
            "DELETE FROM studio_tasks WHERE project = ? AND image_id = ? AND state = 'pending'",
            [(project.key, i) for i in missing],
        )
    return len(found)


def _replace_predictions(store, client, project: Project, batch, class_names, round_index: int) -> None:
    task_ids = [task_id for _, task_id, _ in batch]
    client.delete_predictions(project.project_id, task_ids)
    payload = []
    for image, task_id, (model_version, det_json) in batch:
        pred = lsfmt.prediction(
            dets.from_json(det_json), class_names, image.width, image.height, model_version
        )
        payload.append({"task": task_id, **pred})
    client.import_predictions(project.project_id, payload)
    with store.transaction():
        for image, _, (model_version, det_json) in batch:
            store.conn.execute(
                "UPDATE studio_tasks SET model_version = ?, shown = ?, round = ?, pushed_at = datetime('now')"
                " WHERE project = ? AND image_id = ?",
                (model_version, det_json, round_index, project.key, image.id),
            )


# -- pull -------------------------------------------------------------------------------------------
def _latest_annotation(annotations: list[dict]) -> tuple[dict | None, bool]:
    """(latest non-cancelled annotation or None, whether a cancelled one exists)."""
    live = [a for a in annotations or [] if not a.get("was_cancelled")]
    cancelled = any(a.get("was_cancelled") for a in annotations or [])
    if not live:
        return None, cancelled
    return max(live, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a["id"])), cancelled


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def pull(
    store,
    client,
    *,
    title: str,
    costs=None,
    check_deleted: bool = True,
    advance: Callable[[int], None] | None = None,
    share: bool = False,
) -> PullSummary:
    from autolabel.studio import diff as diffmod

    project = find_project(store, client.url, title)
    if project is None:
        raise AutolabelError(
            f"nothing was pushed to project '{title}' on {client.url} yet: run 'autolabel push'"
        )
    check_owner(store, client, project, share)
    mark_pushed_in_review(store, project)
    advance = advance or (lambda n=1: None)
    summary = PullSummary()
    tasks = {
        r[0]: r[1]
        for r in store.conn.execute(
            "SELECT task_id, image_id FROM studio_tasks WHERE project = ? AND state = 'pushed'",
            (project.key,),
        )
    }
    known = {
        r[0]: (r[1], r[2])
        for r in store.conn.execute(
            "SELECT task_id, annotation_id, annotation_updated FROM studio_annotations WHERE project = ?",
            (project.key,),
        )
    }
    row = store.conn.execute(
        "SELECT pulled_until FROM studio_projects WHERE id = ?", (project.key,)
    ).fetchone()
    since = None
    if row and row[0]:
        since = (_parse_time(row[0]) - PULL_OVERLAP).isoformat().replace("+00:00", "Z")
    newest = row[0] if row else None

    # 1. Raw annotations into SQLite, page by page, before any conversion.
    page: list[tuple] = []

    def flush() -> None:
        if not page:
            return
        with store.transaction():
            store.conn.executemany(
                "INSERT INTO studio_annotations(project, task_id, image_id, annotation_id, annotation_updated,"
                " raw, state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project, task_id) DO UPDATE SET"
                " annotation_id = excluded.annotation_id, annotation_updated = excluded.annotation_updated,"
                " raw = excluded.raw, state = excluded.state, error = NULL, pulled_at = datetime('now')",
                page,
            )
        advance(len(page))
        page.clear()

    # 1a. Which tasks changed: a cheap listing (task id, update time, annotation ids and times).
    # Many tasks never pulled: start the export call now, in parallel with the change listing.
    export_future = None
    if len(tasks) - len(known) >= EXPORT_THRESHOLD:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1)
        export_future = pool.submit(client.export_annotated, project.project_id)
        pool.shutdown(wait=False)
    changed: list[int] = []
    withdrawn: list[int] = []
    listed: set[int] = set()
    for task in client.iter_task_stamps(project.project_id, updated_after=since):
        summary.fetched += 1
        listed.add(int(task["id"]))
        updated = task.get("updated_at")
        if updated and (newest is None or _parse_time(updated) > _parse_time(newest)):
            newest = updated
        task_id = int(task["id"])
        if task_id not in tasks:
            summary.foreign += 1
            continue
        stamps = task.get("annotations") or []
        if not stamps:
            if task_id in known:  # its annotation was deleted in Label Studio
                withdrawn.append(task_id)
            continue
        latest = max(_parse_time(a["updated_at"]) for a in stamps if a.get("updated_at"))
        seen = known.get(task_id)
        if (
            seen is not None
            and seen[1]
            and latest <= _parse_time(seen[1])
            and (seen[0] == -1 or seen[0] in {int(a["id"]) for a in stamps})
        ):
            summary.unchanged += 1
            continue
        changed.append(task_id)

    # 1b. Full annotations of the changed tasks: one export call for big pulls, else filtered pages.
    full: dict[int, dict] = {}
    wanted = set(changed)
    if export_future is not None or len(changed) >= EXPORT_THRESHOLD:
        exported = (
            export_future.result()
            if export_future is not None
            else client.export_annotated(project.project_id)
        )
        for task in exported:
            if int(task["id"]) in wanted:
                full[int(task["id"])] = task
    rest = [t for t in changed if t not in full]
    for start in range(0, len(rest), 500):
        for task in client.iter_tasks(project.project_id, fields="all", task_ids=rest[start : start + 500]):
            full[int(task["id"])] = task

    # 1c. Raw annotations into SQLite, before any conversion.
    for task_id in changed:
        task = full.get(task_id)
        if task is None:  # deleted meanwhile; step 3 notices
            continue
        image_id = tasks[task_id]
        annotations = task.get("annotations") or []
        annotation, cancelled = _latest_annotation(annotations)
        if annotation is None:
            if cancelled:
                stamp = max(a.get("updated_at") or "" for a in annotations)
                page.append((project.key, task_id, image_id, -1, stamp, json.dumps(annotations), "skipped"))
                summary.skipped += 1
            elif task_id in known:
                withdrawn.append(task_id)
            continue
        stamp = annotation.get("updated_at") or annotation.get("created_at") or ""
        page.append(
            (project.key, task_id, image_id, int(annotation["id"]), stamp, json.dumps(annotation), "pending")
        )
        if len(page) >= 500:
            flush()
    flush()
    summary.withdrawn = _withdraw(store, project, [(t, tasks[t]) for t in withdrawn])

    # 2. Convert every raw annotation not yet converted (including earlier failures).
    class_names = store.class_names()
    cost_model = costs or diffmod.CostModel()
    todo = store.conn.execute(
        "SELECT a.task_id, a.image_id, a.annotation_id, a.raw, t.shown, t.round FROM studio_annotations a"
        " JOIN studio_tasks t ON t.project = a.project AND t.image_id = a.image_id"
        " WHERE a.project = ? AND a.state IN ('pending', 'error')",
        (project.key,),
    ).fetchall()
    sizes = {
        im.id: (im.width, im.height) for im in store.images(ids=[r[1] for r in todo], include_errors=True)
    }
    for task_id, image_id, annotation_id, raw, shown, round_index in todo:
        width, height = sizes.get(image_id, (None, None))
        annotation = json.loads(raw)
        result = annotation.get("result") if isinstance(annotation, dict) else None
        if not width or not height:
            sized = [r for r in result or [] if isinstance(r, dict)]
            width = next((r["original_width"] for r in sized if _positive_int(r.get("original_width"))), None)
            height = next(
                (r["original_height"] for r in sized if _positive_int(r.get("original_height"))), None
            )
        if (not width or not height) and result:
            _quarantine(store, project, task_id, image_id, "image size unknown", summary)
            continue
        conv = lsfmt.from_results(result or [], class_names, width or 1, height or 1)
        if conv.unknown_labels:
            for name in conv.unknown_labels:
                summary.unknown_labels[name] = summary.unknown_labels.get(name, 0) + 1
            _mark(
                store, project, task_id, "error", "unknown labels: " + ", ".join(sorted(conv.unknown_labels))
            )
            continue
        if conv.refused:
            reason = "; ".join(conv.refused[:3]) + (
                f"; and {len(conv.refused) - 3} more" if len(conv.refused) > 3 else ""
            )
            _quarantine(store, project, task_id, image_id, reason, summary)
            continue
        correction = diffmod.diff(dets.from_json(shown), conv.detections)
        seconds = cost_model.seconds(correction)
        with store.transaction():
            store.set_labels(image_id, "studio", dets.to_json(conv.detections))
            store.conn.execute(
                "INSERT INTO studio_corrections(project, image_id, task_id, annotation_id, round, shown, human,"
                " kept, moved, relabeled, deleted, added, true_positives, clipped, rotated, seconds)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project, image_id) DO UPDATE SET"
                " task_id = excluded.task_id, annotation_id = excluded.annotation_id, round = excluded.round,"
                " shown = excluded.shown, human = excluded.human, kept = excluded.kept, moved = excluded.moved,"
                " relabeled = excluded.relabeled, deleted = excluded.deleted, added = excluded.added,"
                " true_positives = excluded.true_positives, clipped = excluded.clipped,"
                " rotated = excluded.rotated, seconds = excluded.seconds, created_at = datetime('now')",
                (
                    project.key,
                    image_id,
                    task_id,
                    annotation_id,
                    round_index,
                    correction.shown,
                    correction.human,
                    correction.kept,
                    correction.moved,
                    correction.relabeled,
                    correction.deleted,
                    correction.added,
                    correction.true_positives,
                    conv.clipped,
                    conv.rotated,
                    seconds,
                ),
            )
            _mark(store, project, task_id, "done", None)
        summary.labeled += 1
        summary.empty += int(len(conv.detections) == 0)
        summary.clipped += conv.clipped
        summary.rotated += conv.rotated

    # 3. Tasks deleted in Label Studio: remember it, and free unlabeled images for a later push.
    if check_deleted and tasks:
        # A first pull listed every task already; later ones list ids (deletions are not updates).
        alive = listed if since is None else client.task_ids(project.project_id)
        gone = [t for t in tasks if t not in alive]
        if gone:
            with store.transaction():
                for task_id in gone:
                    image_id = tasks[task_id]
                    store.conn.execute(
                        "UPDATE studio_tasks SET state = 'deleted' WHERE project = ? AND task_id = ?",
                        (project.key, task_id),
                    )
                    store.conn.execute(
                        "UPDATE images SET status = 'proposed' WHERE id = ? AND status = 'in_review'",
                        (image_id,),
                    )
            summary.deleted = len(gone)

    if newest:
        with store.transaction():
            store.conn.execute(
                "UPDATE studio_projects SET pulled_until = ? WHERE id = ?", (newest, project.key)
            )
    return summary


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _quarantine(
    store, project: Project, task_id: int, image_id: int, reason: str, summary: PullSummary
) -> None:
    """Hold an annotation back with its reason: nothing of it becomes labels, every other one goes on,
    and a fix (or deletion) in Label Studio releases it on the next pull."""
    _mark(store, project, task_id, "error", reason)
    summary.quarantined.append((image_id, reason))


def _withdraw(store, project: Project, withdrawn: list[tuple[int, int]]) -> int:
    """Annotations deleted in Label Studio: forget them, remove the labels they gave, and put the
    images back in review (the human decision is gone, so must be the label)."""
    for task_id, image_id in withdrawn:
        with store.transaction():
            store.conn.execute(
                "DELETE FROM studio_annotations WHERE project = ? AND task_id = ?", (project.key, task_id)
            )
            store.conn.execute(
                "DELETE FROM studio_corrections WHERE project = ? AND image_id = ?", (project.key, image_id)
            )
        store.remove_labels(image_id, source="studio", status="in_review")
    return len(withdrawn)


def quarantined(store) -> list[dict]:
    """Annotations held back from the labels, with the reason (for ``pull`` and ``status``)."""
    ensure_schema(store)
    rows = store.conn.execute(
        "SELECT a.task_id, a.image_id, i.path, a.error FROM studio_annotations a JOIN images i ON i.id = a.image_id"
        " WHERE a.state = 'error' ORDER BY a.image_id"
    )
    return [{"task_id": t, "image_id": i, "path": p, "reason": e} for t, i, p, e in rows]


def _mark(store, project: Project, task_id: int, state: str, error: str | None) -> None:
    with store.transaction():
        store.conn.execute(
            "UPDATE studio_annotations SET state = ?, error = ? WHERE project = ? AND task_id = ?",
            (state, error, project.key, task_id),
        )
