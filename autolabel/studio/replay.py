"""A simulated annotator: answers pending Label Studio tasks from YOLO ground truth.

It works only through the Label Studio API, like a person in the browser would: it lists the
project's tasks without annotations, finds each task's ground truth by the image's file stem
(``<labels>/labels/<stem>.txt`` or ``<labels>/<stem>.txt``; a missing file means "no objects"),
and submits an annotation. Optional noise makes it a sloppy human: ``miss_rate`` drops boxes,
``jitter`` shifts each edge by a Gaussian fraction of the box size, ``skip_rate`` skips tasks.
Class names come from ``data.yaml`` in the folder, else from the project's label config
(autolabel writes labels in class-id order).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlparse

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.formats import labelstudio as lsfmt
from autolabel.formats import yolo
from autolabel.progress import announce_total


@dataclass(frozen=True, kw_only=True)
class Noise:
    miss_rate: float = 0.0
    jitter: float = 0.0
    skip_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("miss_rate", "skip_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise AutolabelError(f"--{name.replace('_', '-')} must be within [0, 1]")
        if self.jitter < 0:
            raise AutolabelError("--jitter must be >= 0")


@dataclass
class ReplaySummary:
    answered: int = 0
    empty: int = 0
    skipped: int = 0
    boxes: int = 0
    missing_size: int = 0


def class_names_from(folder: Path) -> list[str] | None:
    """The ground truth's class names (data.yaml, dataset.yaml or classes.txt in the folder)."""
    return yolo.read_class_names(Path(folder))


def task_stem(task: dict) -> str:
    """The image file stem of a task; refuses image references that try to leave their root."""
    data = task.get("data") or {}
    # autolabel's tasks carry the image's path below the image root (uploaded copies are renamed).
    ref = str(data.get("autolabel_path") or "")
    if not ref:
        ref = str(data.get(lsfmt.IMAGE_KEY) or "")
        ref = parse_qs(urlparse(ref).query).get("d", [""])[0] if "?d=" in ref else urlparse(ref).path
    path = PurePosixPath(ref)
    if ".." in path.parts:
        raise AutolabelError(f"task {task.get('id')}: image path {ref!r} leaves its root")
    return path.stem


def _label_file(folder: Path, stem: str) -> Path | None:
    """``labels/<stem>.txt`` or ``<stem>.txt``, also in nested folders (``labels/<group>/<stem>.txt``)."""
    for candidate in (folder / "labels" / f"{stem}.txt", folder / f"{stem}.txt"):
        if candidate.is_file():
            return candidate
    found = sorted(folder.rglob(f"{stem}.txt"))
    return found[0] if found else None


def _ground_truth_image(folder: Path, stem: str) -> Path | None:
    for path in sorted(folder.rglob(f"{stem}.*")):
        if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}:
            return path
    return None


def _image_size(task: dict, folder: Path, client) -> tuple[int, int] | None:
    for pred in task.get("predictions") or []:
        for item in pred.get("result") or []:
            if item.get("original_width") and item.get("original_height"):
                return int(item["original_width"]), int(item["original_height"])
    image = _ground_truth_image(folder, task_stem(task))
    if image is not None:
        return _size_of(image)
    ref = str((task.get("data") or {}).get(lsfmt.IMAGE_KEY) or "")
    if client is not None and ref.startswith("/"):
        import io

        return _size_of(io.BytesIO(client.fetch_bytes(ref)))
    return None


def _size_of(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        orientation = img.getexif().get(0x0112, 1)
        w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def noisy(det, noise: Noise, rng: np.random.Generator, width: int, height: int):
    if len(det) == 0:
        return det
    keep = rng.random(len(det)) >= noise.miss_rate
    det = det[keep]
    if noise.jitter > 0 and len(det):
        xyxy = det.xyxy.astype(np.float64).copy()
        w = (xyxy[:, 2] - xyxy[:, 0])[:, None]
        h = (xyxy[:, 3] - xyxy[:, 1])[:, None]
        scale = np.concatenate([w, h, w, h], axis=1)
        xyxy += rng.normal(0.0, noise.jitter, size=xyxy.shape) * scale
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        x1, x2 = np.minimum(xyxy[:, 0], xyxy[:, 2]), np.maximum(xyxy[:, 0], xyxy[:, 2])
        y1, y2 = np.minimum(xyxy[:, 1], xyxy[:, 3]), np.maximum(xyxy[:, 1], xyxy[:, 3])
        det.xyxy = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        det = det[(det.xyxy[:, 2] - det.xyxy[:, 0] > 1) & (det.xyxy[:, 3] - det.xyxy[:, 1] > 1)]
    return det


def build_answer(
    task: dict, folder: Path, class_names: list[str], noise: Noise, client=None
) -> tuple[list[dict] | None, int]:
    """(result list, box count) for a task; None result means the task is skipped."""
    task_id = int(task["id"])
    rng = np.random.default_rng([noise.seed, task_id])
    if noise.skip_rate and rng.random() < noise.skip_rate:
        return None, 0
    size = _image_size(task, folder, client)
    label_file = _label_file(folder, task_stem(task))
    if label_file is None and _ground_truth_image(folder, task_stem(task)) is None:
        # Neither a label file nor the image: this task has no ground truth here. Answering
        # "no objects" would record a verified-empty image that is not empty.
        raise AutolabelError(f"task {task_id}: no ground truth for '{task_stem(task)}' in {folder}")
    lines = label_file.read_text().splitlines() if label_file else []
    if size is None:
        if lines:
            raise AutolabelError(f"task {task_id}: image size unknown (no prediction, no image in {folder})")
        return [], 0
    width, height = size
    det = yolo.from_lines(lines, width, height)
    if len(det) and int(det.class_id.max()) >= len(class_names):
        raise AutolabelError(
            f"{label_file}: class id {int(det.class_id.max())} has no name ({len(class_names)} classes)"
        )
    det.confidence = None
    det = noisy(det, noise, rng, width, height)
    results = lsfmt.to_results(det, class_names, width, height)
    for i, item in enumerate(results):
        item["id"] = f"h{i}"
    return results, len(results)


def replay(
    client,
    project_id: int,
    folder: Path,
    *,
    class_names: list[str] | None = None,
    noise: Noise | None = None,
    limit: int | None = None,
    workers: int = 4,
    advance: Callable[[int], None] | None = None,
) -> ReplaySummary:
    folder = Path(folder)
    if not folder.is_dir():
        raise AutolabelError(f"ground-truth folder not found: {folder}")
    noise = noise or Noise()
    advance = advance or (lambda n=1: None)
    if class_names is None:
        class_names = class_names_from(folder)
    if class_names is None:
        project = client.get_project(project_id)
        class_names = lsfmt_labels(project["label_config"]) if project else None
    if not class_names:
        raise AutolabelError(f"no class names: put a data.yaml (names: ...) in {folder}")
    pending = [
        t
        for t in client.iter_tasks(project_id, fields="all")
        if not t.get("annotations") and not t.get("total_annotations") and not t.get("cancelled_annotations")
    ]
    if limit is not None:
        pending = pending[:limit]
    answers = [(task, *build_answer(task, folder, class_names, noise, client)) for task in pending]
    announce_total(advance, len(answers))
    summary = ReplaySummary()

    def submit(item) -> None:
        task, result, _ = item
        if result is None:
            client.create_annotation(int(task["id"]), [], was_cancelled=True)
        else:
            client.create_annotation(int(task["id"]), result)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (task, result, n_boxes), _ in zip(answers, pool.map(submit, answers)):
            if result is None:
                summary.skipped += 1
            else:
                summary.answered += 1
                summary.boxes += n_boxes
                summary.empty += int(n_boxes == 0)
            advance(1)
    return summary


def lsfmt_labels(label_config: str) -> list[str]:
    from autolabel.studio.project import project_labels

    return project_labels(label_config)
