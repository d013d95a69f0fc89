"""Labels out of the workspace: YOLO / COCO datasets and a preview grid.

Each image contributes the boxes of one source: its human labels or its newest pre-labels
(``auto`` prefers human labels). Images in status 'error' are never exported.

YOLO layout: ``DIR/images/<relative path>`` (symlinks to the originals, copies where links are
impossible), ``DIR/labels/<relative path>.txt`` (Ultralytics finds labels by swapping
``images`` for ``labels``), ``DIR/data.yaml``. Mirroring the relative paths keeps two
``frame_0001.jpg`` from different folders apart. COCO: ``DIR/annotations.json`` whose
``file_name`` is relative to the workspace's image root (also recorded under ``info``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from autolabel import detections as dets
from autolabel.errors import AutolabelError
from autolabel.store import IMAGE_STATUSES

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.store import ImageRecord, Store
    from autolabel.workspace import Workspace

SOURCES = ("auto", "labels", "predictions")
FORMATS = ("yolo", "coco")
EXPORTABLE_STATUSES = tuple(s for s in IMAGE_STATUSES if s != "error")


@dataclass(frozen=True)
class LabeledImage:
    record: ImageRecord
    detections: sv.Detections
    source: str  # 'labels' | 'predictions'


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    images: int
    boxes: int
    from_labels: int
    from_predictions: int
    without_boxes_source: int  # selected images that have neither labels nor predictions (left out)


def parse_statuses(text: str | None) -> list[str] | None:
    """'labeled,validation' -> ['labeled', 'validation']; None / '' / 'all' -> None (every usable image)."""
    if text is None or text.strip() in ("", "all"):
        return None
    statuses = [s.strip().replace("-", "_") for s in text.split(",") if s.strip()]
    if "error" in statuses:
        raise AutolabelError("--status error: images that failed to decode are never exported")
    unknown = [s for s in statuses if s not in EXPORTABLE_STATUSES]
    if unknown:
        raise AutolabelError(
            f"--status: unknown status {', '.join(unknown)} (choose from {', '.join(EXPORTABLE_STATUSES)})"
        )
    return statuses


def collect(store: Store, statuses: Sequence[str] | None, source: str) -> tuple[list[LabeledImage], int]:
    """Images in ``statuses`` with their boxes from ``source``; also how many had no such boxes."""
    if source not in SOURCES:
        raise AutolabelError(f"--source {source}: choose one of {', '.join(SOURCES)}")
    records = store.images(status=list(statuses) if statuses else None)
    ids = [r.id for r in records]
    labels = store.labels(ids) if source in ("auto", "labels") else {}
    predictions = store.latest_predictions(ids) if source in ("auto", "predictions") else {}
    items, missing = [], 0
    for record in records:
        if record.id in labels:
            items.append(LabeledImage(record, dets.from_json(labels[record.id]), "labels"))
        elif record.id in predictions:
            items.append(LabeledImage(record, dets.from_json(predictions[record.id][1]), "predictions"))
        else:
            missing += 1
    return items, missing


def yolo_paths(relative_paths: Sequence[str]) -> list[tuple[PurePosixPath, PurePosixPath]]:
    """(image path, label path) inside the export for each image's path relative to the image root.

    The folder structure is kept; two images whose names differ only in suffix ('a.jpg', 'a.png')
    would share a label file, so the later one gets its suffix folded into the stem.
    """
    out, taken = [], set()
    for rel in relative_paths:
        path = PurePosixPath(rel)
        label = path.with_suffix(".txt")
        if label.as_posix().lower() in taken:
            path = path.with_name(f"{path.stem}_{path.suffix.lstrip('.')}{path.suffix}")
            label = path.with_suffix(".txt")
        taken.add(label.as_posix().lower())
        out.append((PurePosixPath("images") / path, PurePosixPath("labels") / label))
    return out


def export_labels(
    ws: Workspace,
    fmt: str,
    out_dir: str | Path,
    statuses: Sequence[str] | None = None,
    source: str = "auto",
    with_scores: bool = False,
) -> ExportSummary:
    if fmt not in FORMATS:
        raise AutolabelError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    with ws.open_store() as store:
        names = store.class_names()
        items, missing = collect(store, statuses, source)
    if not items:
        raise AutolabelError(
            f"nothing to export: no images with {'labels or predictions' if source == 'auto' else source}"
            f" in status {', '.join(statuses) if statuses else 'any'}"
        )
    _check_class_ids(items, names)
    out_dir = Path(out_dir).resolve()
    if fmt == "yolo":
        write_yolo(ws.image_root, items, names, out_dir, with_scores)
    else:
        write_coco(ws.image_root, items, names, out_dir)
    return ExportSummary(
        out_dir=out_dir,
        images=len(items),
        boxes=sum(len(item.detections) for item in items),
        from_labels=sum(item.source == "labels" for item in items),
        from_predictions=sum(item.source == "predictions" for item in items),
        without_boxes_source=missing,
    )


def write_yolo(
    image_root: Path, items: Sequence[LabeledImage], names: list[str], out_dir: Path, with_scores: bool
) -> None:
    from autolabel.formats import yolo

    _prepare_yolo_dir(out_dir)
    paths = yolo_paths([item.record.path for item in items])
    for item, (image_rel, label_rel) in zip(items, paths):
        record = item.record
        _link(image_root / record.path, out_dir / image_rel)
        label_file = out_dir / label_rel
        label_file.parent.mkdir(parents=True, exist_ok=True)
        lines = yolo.to_lines(item.detections, record.width, record.height, with_scores=with_scores)
        label_file.write_text("".join(line + "\n" for line in lines))
    (out_dir / "data.yaml").write_text(yolo.data_yaml(names, train="images", val="images", path=str(out_dir)))


def write_coco(image_root: Path, items: Sequence[LabeledImage], names: list[str], out_dir: Path) -> Path:
    from autolabel.formats import coco

    rows = [(i.record.id, i.record.path, i.record.width, i.record.height, i.detections) for i in items]
    data = coco.dataset(names, rows, with_scores=True)  # only pre-labels carry scores
    data["info"] = {"description": "exported by autolabel", "image_root": str(image_root)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def _prepare_yolo_dir(out_dir: Path) -> None:
    """A rerun replaces its own earlier export; other folders named images/labels are left alone."""
    ours = (out_dir / "data.yaml").is_file()
    for sub in ("images", "labels"):
        target = out_dir / sub
        if target.exists() or target.is_symlink():
            if not ours:
                raise AutolabelError(
                    f"{target} already exists and is not an earlier export: choose another --out"
                )
            shutil.rmtree(target)
    out_dir.mkdir(parents=True, exist_ok=True)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source, target)
    except OSError:  # file systems without symlinks (some Windows setups)
        shutil.copy2(source, target)


def _check_class_ids(items: Sequence[LabeledImage], names: list[str]) -> None:
    for item in items:
        det = item.detections
        if len(det) and (det.class_id.min() < 0 or det.class_id.max() >= len(names)):
            raise AutolabelError(
                f"{item.record.path}: class id {int(det.class_id.max())} is not among the workspace's "
                f"{len(names)} classes"
            )


# -- preview -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewSummary:
    path: Path
    shown: int
    unreadable: list[tuple[str, str]]


def write_preview(
    ws: Workspace,
    out: str | Path,
    n: int = 16,
    statuses: Sequence[str] | None = None,
    source: str = "auto",
    seed: int = 0,
    tile_size: int = 320,
) -> PreviewSummary:
    """A PNG grid of ``n`` randomly chosen (``seed``) images with their boxes, class and score."""
    import numpy as np

    from autolabel.images import ImageDecodeError, decode
    from autolabel.preview import render_grid

    if n < 1:
        raise AutolabelError("--n must be at least 1")
    with ws.open_store() as store:
        names = store.class_names()
        items, _ = collect(store, statuses, source)
    if not items:
        raise AutolabelError(
            f"nothing to preview: no images with {'labels or predictions' if source == 'auto' else source}"
            f" in status {', '.join(statuses) if statuses else 'any'}"
        )
    rng = np.random.default_rng(seed)
    chosen = [items[i] for i in sorted(rng.choice(len(items), size=min(n, len(items)), replace=False))]
    tiles, titles, unreadable = [], [], []
    for item in chosen:
        try:
            pixels = decode(ws.image_root / item.record.path).pixels
        except ImageDecodeError as exc:
            unreadable.append((item.record.path, str(exc)))
            continue
        tiles.append((pixels, item.detections))
        titles.append(item.record.path)
    if not tiles:
        raise AutolabelError("nothing to preview: none of the chosen images could be decoded")
    path = render_grid(tiles, names, out, titles=titles, tile_size=tile_size)
    return PreviewSummary(path=Path(path), shown=len(tiles), unreadable=unreadable)
