"""Bring existing human labels (YOLO txt or COCO JSON) into the store as verified labels.

Images must live under the workspace image root (``--images`` defaults to it and may name a
subfolder of it): they are registered exactly as ``autolabel init`` does (source groups, hashes,
bad-file handling), and labels are matched to them by path relative to ``--images``:

- YOLO: ``LABELS/<rel>.txt`` labels the image ``IMAGES/<rel>.<ext>``; class names come from
  ``--names a,b,c``, else ``data.yaml`` (``names`` list or mapping) or ``classes.txt`` in LABELS
  or up to two folders up. An image without a .txt is left unlabeled; an empty .txt means "verified: no objects".
- COCO: ``LABELS`` is the JSON file (or a folder holding exactly one); ``file_name`` is relative
  to IMAGES. Every image listed in the JSON is labeled (no annotations = no objects).

Class names are matched to the store's classes and the ontology by exact name; names used by
boxes that are unknown fail the whole import with one error listing them all, unless
``add_classes`` (they are then appended to the store's classes). Everything is validated before
anything is written; images already labeled in Label Studio keep their labels unless ``replace``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel import detections as dets
from autolabel.errors import AutolabelError, read_text

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.config import GroupingConfig
    from autolabel.store import Store

__all__ = ["ImportSummary", "import_labels", "read_coco", "read_yolo", "yolo_class_names"]

FORMATS = ("yolo", "coco")


@dataclass
class ImportSummary:
    labeled: int = 0
    boxes: int = 0
    registered: int = 0
    added_classes: list[str] = field(default_factory=list)
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    orphans: list[str] = field(default_factory=list)  # label entries without an image file


def yolo_class_names(labels_dir: Path) -> list[str]:
    """Names from data.yaml or classes.txt in the labels folder or up to two folders above it
    (``root/data.yaml`` with ``root/labels/train/*.txt`` is the ultralytics layout)."""
    from autolabel.formats.yolo import read_class_names

    names = read_class_names(labels_dir, levels=3)
    if names is None:
        raise AutolabelError(
            f"no class names for {labels_dir}: give --names a,b,c or put a data.yaml (names) or"
            " classes.txt there (or in its parent)"
        )
    return names


def read_yolo(
    labels_dir: Path, images: dict[str, tuple[int, int]]
) -> tuple[dict[str, sv.Detections], list[str]]:
    """rel image path -> detections (class ids index the file's names), and orphan label files.

    ``images``: rel path -> (width, height) of every candidate image below the images folder.
    """
    from autolabel.formats.yolo import YoloFormatError, read_label_file

    by_stem = {str(Path(rel).with_suffix("")): rel for rel in images}
    found: dict[str, sv.Detections] = {}
    problems: list[str] = []
    orphans: list[str] = []
    for label in sorted(labels_dir.rglob("*.txt")):
        rel_label = label.relative_to(labels_dir)
        if label.name == "classes.txt" or any(part.startswith(".") for part in rel_label.parts):
            continue
        rel = by_stem.get(str(rel_label.with_suffix("")))
        if rel is None:
            orphans.append(rel_label.as_posix())
            continue
        width, height = images[rel]
        try:
            found[rel] = read_label_file(label, width, height)
        except YoloFormatError as exc:
            problems.append(f"{rel_label.as_posix()} {exc}")
    if problems:
        raise AutolabelError(_listing(f"{len(problems)} malformed YOLO label files", problems))
    return found, orphans


def read_coco(labels: Path) -> tuple[list[str], dict[str, sv.Detections], dict[str, tuple[int, int]]]:
    """(category names in file order, file_name -> detections indexing those names, file_name -> size)."""
    from autolabel.formats.coco import image_detections

    if labels.is_dir():
        candidates = sorted(labels.glob("*.json"))
        if len(candidates) != 1:
            raise AutolabelError(f"{labels}: expected one COCO .json file there, found {len(candidates)}")
        labels = candidates[0]
    from autolabel.formats.coco import CocoFormatError, validate

    try:
        coco = json.loads(read_text(labels, "COCO file"))
    except json.JSONDecodeError as exc:
        raise AutolabelError(f"{labels}: not readable COCO JSON ({exc})") from None
    try:
        orphans = validate(coco)
    except CocoFormatError as exc:
        raise AutolabelError(f"{labels}: {exc}") from None
    if orphans:
        raise AutolabelError(
            f"{labels}: {len(orphans)} annotations refer to image ids that are not in 'images'"
            f" (e.g. annotation {orphans[0][0]} -> image {orphans[0][1]}); fix or remove them, nothing was imported"
        )
    per_image = image_detections(coco)
    names = [str(c["name"]) for c in coco["categories"]]
    out, sizes = {}, {}
    for im in coco["images"]:
        rel = Path(im["file_name"]).as_posix()
        out[rel] = per_image[im["id"]]
        if im.get("width") and im.get("height"):
            sizes[rel] = (int(im["width"]), int(im["height"]))
    return names, out, sizes


def import_labels(
    store: Store,
    image_root: Path,
    grouping: GroupingConfig,
    labels: Path,
    fmt: str,
    images_dir: Path | None = None,
    add_classes: bool = False,
    ontology_names: list[str] | None = None,
    replace: bool = False,
    names: list[str] | None = None,
) -> ImportSummary:
    """``names``: the YOLO files' class names in index order (else data.yaml/classes.txt)."""
    from autolabel.registry import register_images

    if fmt not in FORMATS:
        raise AutolabelError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not labels.exists():
        raise AutolabelError(f"labels not found: {labels}")
    image_root = image_root.resolve()
    images_dir = (images_dir or image_root).resolve()
    try:
        prefix = images_dir.relative_to(image_root).as_posix()
    except ValueError:
        raise AutolabelError(
            f"--images {images_dir} is outside the workspace image folder {image_root}:"
            " copy or move the images there first (labels are matched by path below it)"
        ) from None
    prefix = "" if prefix == "." else prefix + "/"

    summary = ImportSummary()
    summary.registered = register_images(store, image_root, grouping).new
    records = {im.path: im for im in store.images(include_errors=True) if im.path.startswith(prefix)}
    sizes = {rel[len(prefix) :]: (im.width or 0, im.height or 0) for rel, im in records.items()}
    if fmt == "yolo":
        if not labels.is_dir():
            raise AutolabelError(f"--labels for YOLO must be a folder of .txt files: {labels}")
        names = names or yolo_class_names(labels)
        found, summary.orphans = read_yolo(labels, sizes)
        stated: dict[str, tuple[int, int]] = {}
    else:
        names, found, stated = read_coco(labels)
        summary.orphans = sorted(rel for rel in found if rel not in sizes)
        for rel in summary.orphans:
            found.pop(rel)
    for rel in sorted(found):
        im = records[prefix + rel]
        if im.status == "error":
            summary.skipped.append((im.path, f"unreadable image: {im.error}"))
            found.pop(rel)
        elif rel in stated and stated[rel] != (im.width, im.height):
            w, h = stated[rel]
            summary.skipped.append((im.path, f"COCO says {w}x{h} but the image is {im.width}x{im.height}"))
            found.pop(rel)

    mapping = _class_mapping(store, names, found, add_classes, ontology_names, summary)
    existing = store.label_sources()
    rows = []
    for rel, det in sorted(found.items()):
        im = records[prefix + rel]
        if existing.get(im.id) not in (None, "import") and not replace:
            summary.skipped.append((im.path, f"already labeled ({existing[im.id]}); --replace to overwrite"))
            continue
        det = _remap(det, mapping)
        before = len(det)
        summary.clipped_boxes += _count_outside(det, im.width, im.height)
        det = dets.clip_to_image(det, im.width, im.height)
        summary.dropped_boxes += before - len(det)
        rows.append((im.id, dets.to_json(det)))
        summary.boxes += len(det)
    with store.transaction():
        for image_id, payload in rows:
            store.set_labels(image_id, "import", payload)
    summary.labeled = len(rows)
    return summary


def _class_mapping(store, names, found, add_classes, ontology_names, summary) -> np.ndarray:
    """File class index -> store class id; one error lists every unknown name in use."""
    used = sorted({int(c) for det in found.values() for c in (det.class_id if len(det) else [])})
    out_of_range = [c for c in used if not 0 <= c < len(names)]
    if out_of_range:
        offenders = sorted(
            rel for rel, det in found.items() if len(det) and np.isin(det.class_id, out_of_range).any()
        )
        raise AutolabelError(
            _listing(
                f"class ids {out_of_range} are outside the {len(names)} names of the label files", offenders
            )
        )
    known = set(store.class_names()) | set(ontology_names or [])
    unknown = sorted({names[c] for c in used} - known)
    if unknown and not add_classes:
        raise AutolabelError(
            f"{len(unknown)} class names are not in the ontology/classes: {', '.join(unknown)}"
            " (fix the names, or rerun with --add-classes to add them)"
        )
    ids = store.ensure_classes([*(ontology_names or []), *(names[c] for c in used)])
    summary.added_classes = unknown
    mapping = np.full(max(1, len(names)), -1, dtype=int)
    for c in used:
        mapping[c] = ids[names[c]]
    return mapping


def _remap(det: sv.Detections, mapping: np.ndarray) -> sv.Detections:
    if len(det) == 0:
        return det
    return dets.make(det.xyxy, mapping[det.class_id], det.confidence)


def _count_outside(det: sv.Detections, width: int, height: int, tolerance: float = 0.5) -> int:
    if len(det) == 0:
        return 0
    x1, y1, x2, y2 = det.xyxy.T
    return int(
        ((x1 < -tolerance) | (y1 < -tolerance) | (x2 > width + tolerance) | (y2 > height + tolerance)).sum()
    )


def _listing(head: str, items: list[str], limit: int = 8) -> str:
    shown = "; ".join(items[:limit])
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return f"{head}: {shown}{more}"
