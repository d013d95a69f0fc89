"""Push pre-labels to Label Studio: one task per image to review, without loss or duplicates.

Every import batch is recorded as ``pending`` tasks (``studio.state``) before it is sent and as
``pushed`` with the task ids once the answer is in; a rerun after a crash, or an import whose
outcome is unknown (``UncertainWrite``), reconciles the pending rows against the server
(``reconcile``), so an interrupted push never creates a second task for an image. A task whose
pre-label is stale (a newer model proposed, nobody annotated it yet) gets the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from autolabel import detections as dets
from autolabel.errors import AutolabelError
from autolabel.formats import labelstudio as lsfmt
from autolabel.progress import announce_total
from autolabel.studio import state
from autolabel.studio.project import ensure_project, set_instructions
from autolabel.studio.state import Project

__all__ = [
    "MAX_IMPORT_ATTEMPTS",
    "UPLOAD_CHUNK",
    "PushSummary",
    "current_round",
    "local_files_url",
    "push",
    "push_candidates",
    "reconcile",
    "safe_relative_path",
]

MAX_IMPORT_ATTEMPTS = 5
UPLOAD_CHUNK = 50


@dataclass
class PushSummary:
    project_id: int = 0
    created: int = 0
    recovered: int = 0  # tasks found on the server after an interrupted import
    replaced: int = 0  # existing tasks whose pre-labels were replaced
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    labels_added: list[str] = field(default_factory=list)
    remaining: int = 0  # the project's pushed tasks not annotated yet (the instructions say it)


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


# -- push -----------------------------------------------------------------------------------------
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
        raise AutolabelError(
            "the workspace has no classes yet: give it an ontology ('autolabel init --ontology FILE')"
            " or run 'autolabel propose' first"
        )
    state.ensure_schema(store)
    project, added = ensure_project(
        store, client, title, class_names, image_root if image_mode == "local" else None, share=share
    )
    summary = PushSummary(project_id=project.project_id, labels_added=added)
    summary.recovered += reconcile(store, client, project)
    state.mark_pushed_in_review(store, project)
    advance = advance or (lambda n=1: None)
    round_index = current_round(store)

    new, replace = _plan(
        store, project, image_ids, student_thresholds, summary, image_root, document_root, image_mode
    )
    announce_total(advance, summary.unchanged + len(new) + len(replace))
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
    summary.remaining = set_instructions(store, client, project, round_index, student_thresholds is not None)
    return summary


def _plan(
    store,
    project: Project,
    image_ids: Iterable[int] | None,
    student_thresholds: Sequence[float] | None,
    summary: PushSummary,
    image_root: Path,
    document_root: Path,
    image_mode: str,
) -> tuple[list[tuple], list[tuple]]:
    """(new tasks as (image, url, pre-label), stale tasks as (image, task id, pre-label)); the
    refused and unchanged images are counted in ``summary``."""
    candidates = push_candidates(store, image_ids)
    predictions = store.latest_predictions([im.id for im in candidates])
    if student_thresholds is not None:
        from autolabel.calibration import filter_prelabel

        predictions = {i: filter_prelabel(p, student_thresholds) for i, p in predictions.items()}
    tasks = state.tasks_by_image(store, project)
    annotated = state.annotated_image_ids(store, project)
    new, replace = [], []
    for image in candidates:
        task = tasks.get(image.id)
        pred = predictions.get(image.id)
        if task is None:
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
            task.state == "pushed"
            and pred is not None
            and image.id not in annotated
            and (task.model_version, task.shown) != pred
        ):
            replace.append((image, task.task_id, pred))
        else:
            summary.unchanged += 1
    return new, replace


def _with_uploaded_urls(store, client, project: Project, image_root: Path, batch):
    """Upload the batch's images that have no uploaded copy yet; the batch with their URLs."""
    known = state.uploads(store, project)
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
        uploaded = {image.id: urls[name] for name, image in names.items()}
        state.record_uploads(store, project, uploaded)
        known.update(uploaded)
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
    import time

    from autolabel.studio.client import StudioUnavailable, UncertainWrite

    remaining = list(batch)
    # Persist intent: these images are about to become tasks.
    state.record_pending(store, project, [(image, pred) for image, _, pred in remaining], round_index)
    workspace_id = store.workspace_id()
    created = 0
    for attempt in range(MAX_IMPORT_ATTEMPTS):
        payload = [
            _task_payload(image, url, pred, class_names, workspace_id) for image, url, pred in remaining
        ]
        try:
            task_ids = client.import_tasks(project.project_id, payload)
        except UncertainWrite:
            time.sleep(min(0.5 * 2**attempt, 10.0))
            summary.recovered += reconcile(store, client, project)
            still = {t.image_id for t in state.pending_tasks(store, project)}
            created += sum(1 for b in remaining if b[0].id not in still)
            remaining = [b for b in remaining if b[0].id in still]
            if not remaining:
                return created
            # reconcile() dropped rows it could not find; persist the intent again before retrying.
            state.record_pending(store, project, [(image, pred) for image, _, pred in remaining], round_index)
            continue
        # Persist the outcome: the task ids, in the same order as the batch.
        state.mark_pushed(
            store, project, [(image.id, tid) for (image, _, _), tid in zip(remaining, task_ids)]
        )
        return created + len(remaining)
    raise StudioUnavailable(f"importing tasks into {client.url} keeps failing; rerun 'autolabel push' later")


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
    state.set_shown(store, project, [(image.id, pred) for image, _, pred in batch], round_index)


def reconcile(store, client, project: Project) -> int:
    """Resolve ``pending`` rows after an interrupted push: record tasks the server has, drop the rest.

    Returns how many pending images turned out to have been created already. Duplicate tasks for
    one image (which only an outside re-import could cause) keep the lowest id; the others are deleted.
    """
    pending = {t.image_id: t for t in state.pending_tasks(store, project)}
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
        if data.get("autolabel_sha256") != pending[image_id].sha256:
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
    # A task that lost its prediction mid-import gets it again through the replace path.
    lost_prelabel = [i for i, (_, n) in found.items() if pending[i].shown is not None and n == 0]
    with store.transaction():
        state.mark_pushed(
            store, project, [(i, tid) for i, (tid, _) in found.items()], forget_shown=lost_prelabel
        )
        state.drop_pending(store, project, [i for i in pending if i not in found])
    return len(found)
