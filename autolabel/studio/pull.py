"""Pull human corrections back from Label Studio into labels, without loss or duplicates.

A pull is a sequence of steps, each durable before the next (the state is in ``studio.state``):
list the tasks the server updated since the last pull (minus a safety overlap), fetch the full
annotations of the changed ones, store them raw before any conversion, withdraw the labels of
annotations deleted in Label Studio, convert every stored annotation not converted yet (with its
correction diff against the pre-label shown), notice tasks deleted in Label Studio, and remember
how far the server's updates were pulled. An annotation whose id and ``updated_at`` are unchanged
is not converted again; one that cannot become labels is held back with its reason (quarantine)
and retried on the next pull.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from autolabel import detections as dets
from autolabel.config import AnnotationCostConfig
from autolabel.errors import AutolabelError
from autolabel.formats import labelstudio as lsfmt
from autolabel.progress import announce_total
from autolabel.studio import diff, state
from autolabel.studio.project import check_owner
from autolabel.studio.state import Project, RawAnnotation

__all__ = [
    "EXPORT_THRESHOLD",
    "PULL_OVERLAP",
    "PullSummary",
    "pull",
]

# Tasks updated this long before the last pull's newest update are fetched again (clock skew,
# updates committed while the previous pull was paging); unchanged annotations are skipped.
PULL_OVERLAP = timedelta(seconds=120)
# From this many changed tasks on, pull reads them through one JSON export call (about 3x faster
# per task than the paged task listing with annotations).
EXPORT_THRESHOLD = 200
PAGE = 500  # raw annotations per transaction, tasks per filtered listing call


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


@dataclass
class _Changes:
    """What the cheap task listing found."""

    changed: list[int] = field(default_factory=list)  # tasks whose annotations must be fetched
    withdrawn: list[int] = field(default_factory=list)  # tasks whose pulled annotation was deleted
    listed: set[int] = field(default_factory=set)  # every task id the listing returned
    newest: str | None = None  # server time of the newest task update seen


def pull(
    store,
    client,
    *,
    title: str,
    costs: AnnotationCostConfig | None = None,
    check_deleted: bool = True,
    advance: Callable[[int], None] | None = None,
    share: bool = False,
) -> PullSummary:
    """Fetch what changed in Label Studio since the last pull and turn it into labels."""
    project = state.find_project(store, client.url, title)
    if project is None:
        raise AutolabelError(
            f"nothing was pushed to project '{title}' on {client.url} yet: run 'autolabel push'"
        )
    check_owner(store, client, project, share)
    state.mark_pushed_in_review(store, project)
    advance = advance or (lambda n=1: None)
    summary = PullSummary()
    tasks = state.pushed_tasks(store, project)
    known = state.seen_annotations(store, project)
    pulled_until = state.pulled_until(store, project)
    since = None
    if pulled_until:
        since = (_parse_time(pulled_until) - PULL_OVERLAP).isoformat().replace("+00:00", "Z")

    # Many tasks never pulled: start the export call now, in parallel with the change listing.
    export = _start_export(client, project) if len(tasks) - len(known) >= EXPORT_THRESHOLD else None
    changes = _list_changes(client, project, tasks, known, since, pulled_until, summary)
    full = _fetch_annotations(client, project, changes.changed, export)
    announce_total(advance, len(changes.changed))
    _store_raw_annotations(store, project, changes, full, tasks, known, summary, advance)
    summary.withdrawn = _withdraw(store, project, [(t, tasks[t]) for t in changes.withdrawn])
    _convert(store, project, costs or AnnotationCostConfig(), summary)
    if check_deleted and tasks:
        # A first pull listed every task already; later ones list ids (deletions are not updates).
        alive = changes.listed if since is None else client.task_ids(project.project_id)
        summary.deleted = _mark_deleted(store, project, tasks, alive)
    if changes.newest:
        state.set_pulled_until(store, project, changes.newest)
    return summary


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _start_export(client, project: Project):
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(client.export_annotated, project.project_id)
    pool.shutdown(wait=False)
    return future


def _list_changes(
    client,
    project: Project,
    tasks: dict[int, int],
    known: dict[int, state.SeenAnnotation],
    since: str | None,
    newest: str | None,
    summary: PullSummary,
) -> _Changes:
    """Which tasks changed: a cheap listing (task id, update time, annotation ids and times)."""
    changes = _Changes(newest=newest)
    for task in client.iter_task_stamps(project.project_id, updated_after=since):
        summary.fetched += 1
        changes.listed.add(int(task["id"]))
        updated = task.get("updated_at")
        if updated and (changes.newest is None or _parse_time(updated) > _parse_time(changes.newest)):
            changes.newest = updated
        task_id = int(task["id"])
        if task_id not in tasks:
            summary.foreign += 1
            continue
        stamps = task.get("annotations") or []
        if not stamps:
            if task_id in known:  # its annotation was deleted in Label Studio
                changes.withdrawn.append(task_id)
            continue
        latest = max(_parse_time(a["updated_at"]) for a in stamps if a.get("updated_at"))
        seen = known.get(task_id)
        if (
            seen is not None
            and seen.updated
            and latest <= _parse_time(seen.updated)
            and (seen.annotation_id == -1 or seen.annotation_id in {int(a["id"]) for a in stamps})
        ):
            summary.unchanged += 1
            continue
        changes.changed.append(task_id)
    return changes


def _fetch_annotations(client, project: Project, changed: list[int], export) -> dict[int, dict]:
    """Full annotations of the changed tasks: one export call for big pulls, else filtered pages."""
    full: dict[int, dict] = {}
    wanted = set(changed)
    if export is not None or len(changed) >= EXPORT_THRESHOLD:
        exported = export.result() if export is not None else client.export_annotated(project.project_id)
        for task in exported:
            if int(task["id"]) in wanted:
                full[int(task["id"])] = task
    rest = [t for t in changed if t not in full]
    for start in range(0, len(rest), PAGE):
        for task in client.iter_tasks(project.project_id, fields="all", task_ids=rest[start : start + PAGE]):
            full[int(task["id"])] = task
    return full


def _latest_annotation(annotations: list[dict]) -> tuple[dict | None, bool]:
    """(latest non-cancelled annotation or None, whether a cancelled one exists)."""
    live = [a for a in annotations or [] if not a.get("was_cancelled")]
    cancelled = any(a.get("was_cancelled") for a in annotations or [])
    if not live:
        return None, cancelled
    return max(live, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a["id"])), cancelled


def _store_raw_annotations(
    store,
    project: Project,
    changes: _Changes,
    full: dict[int, dict],
    tasks: dict[int, int],
    known: dict[int, state.SeenAnnotation],
    summary: PullSummary,
    advance: Callable[[int], None],
) -> None:
    """Raw annotations into SQLite, page by page, before any conversion; a task whose annotations
    were all deleted joins ``changes.withdrawn``."""
    page: list[RawAnnotation] = []

    def flush() -> None:
        if page:
            state.store_raw(store, project, page)
            advance(len(page))
            page.clear()

    for task_id in changes.changed:
        task = full.get(task_id)
        if task is None:  # deleted meanwhile; _mark_deleted notices
            continue
        image_id = tasks[task_id]
        annotations = task.get("annotations") or []
        annotation, cancelled = _latest_annotation(annotations)
        if annotation is None:
            if cancelled:
                stamp = max(a.get("updated_at") or "" for a in annotations)
                page.append(RawAnnotation(task_id, image_id, -1, stamp, json.dumps(annotations), "skipped"))
                summary.skipped += 1
            elif task_id in known:
                changes.withdrawn.append(task_id)
            continue
        stamp = annotation.get("updated_at") or annotation.get("created_at") or ""
        page.append(
            RawAnnotation(task_id, image_id, int(annotation["id"]), stamp, json.dumps(annotation), "pending")
        )
        if len(page) >= PAGE:
            flush()
    flush()


def _withdraw(store, project: Project, withdrawn: list[tuple[int, int]]) -> int:
    """Annotations deleted in Label Studio: forget them, remove the labels they gave, and put the
    images back in review (the human decision is gone, so must be the label)."""
    for task_id, image_id in withdrawn:
        state.forget_annotation(store, project, task_id, image_id)
        store.remove_labels(image_id, source="studio", status="in_review")
    return len(withdrawn)


def _convert(store, project: Project, costs: AnnotationCostConfig, summary: PullSummary) -> None:
    """Convert every stored annotation not yet converted (including earlier failures) into labels,
    with its correction diff against the pre-label shown."""
    class_names = store.class_names()
    todo = state.unconverted(store, project)
    sizes = {
        im.id: (im.width, im.height)
        for im in store.images(ids=[a.image_id for a in todo], include_errors=True)
    }
    for item in todo:
        width, height = sizes.get(item.image_id, (None, None))
        annotation = json.loads(item.raw)
        result = annotation.get("result") if isinstance(annotation, dict) else None
        if not width or not height:
            width, height = _size_from_results(result)
        if (not width or not height) and result:
            _quarantine(store, project, item.task_id, item.image_id, "image size unknown", summary)
            continue
        conv = lsfmt.from_results(result or [], class_names, width or 1, height or 1)
        if conv.unknown_labels:
            for name in conv.unknown_labels:
                summary.unknown_labels[name] = summary.unknown_labels.get(name, 0) + 1
            state.set_annotation_state(
                store,
                project,
                item.task_id,
                "error",
                "unknown labels: " + ", ".join(sorted(conv.unknown_labels)),
            )
            continue
        if conv.refused:
            reason = "; ".join(conv.refused[:3]) + (
                f"; and {len(conv.refused) - 3} more" if len(conv.refused) > 3 else ""
            )
            _quarantine(store, project, item.task_id, item.image_id, reason, summary)
            continue
        correction = diff.diff(dets.from_json(item.shown), conv.detections)
        record = state.CorrectionRecord(
            image_id=item.image_id,
            task_id=item.task_id,
            annotation_id=item.annotation_id,
            round=item.round,
            **asdict(correction),  # the diff's counts are the row's columns of the same names
            clipped=conv.clipped,
            rotated=conv.rotated,
            seconds=costs.seconds(correction),
        )
        with store.transaction():
            store.set_labels(item.image_id, "studio", dets.to_json(conv.detections))
            state.record_correction(store, project, record)
            state.set_annotation_state(store, project, item.task_id, "done", None)
        summary.labeled += 1
        summary.empty += int(len(conv.detections) == 0)
        summary.clipped += conv.clipped
        summary.rotated += conv.rotated


def _size_from_results(result) -> tuple[int | None, int | None]:
    """The image size the annotation's regions carry (the server's ``original_width/height``)."""
    sized = [r for r in result or [] if isinstance(r, dict)]
    width = next((r["original_width"] for r in sized if _positive_int(r.get("original_width"))), None)
    height = next((r["original_height"] for r in sized if _positive_int(r.get("original_height"))), None)
    return width, height


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _quarantine(
    store, project: Project, task_id: int, image_id: int, reason: str, summary: PullSummary
) -> None:
    """Hold an annotation back with its reason: nothing of it becomes labels, every other one goes on,
    and a fix (or deletion) in Label Studio releases it on the next pull."""
    state.set_annotation_state(store, project, task_id, "error", reason)
    summary.quarantined.append((image_id, reason))


def _mark_deleted(store, project: Project, tasks: dict[int, int], alive: set[int]) -> int:
    """Tasks deleted in Label Studio: remember it, and free unlabeled images for a later push."""
    gone = [t for t in tasks if t not in alive]
    if gone:
        state.mark_deleted(store, project, [(t, tasks[t]) for t in gone])
    return len(gone)
