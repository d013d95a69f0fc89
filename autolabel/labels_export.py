"""Labels out of the workspace: YOLO / COCO datasets and a preview grid.

Each image contributes the boxes of one source: its human labels or its newest pre-labels
(``auto`` prefers human labels). Images in status 'error' are never exported.

YOLO layout (written by ``autolabel.formats.yolo``): ``DIR/images/<relative path>`` (symlinks to
the originals, copies where links are impossible), ``DIR/labels/<relative path>.txt``,
``DIR/data.yaml``. Mirroring the relative paths keeps two ``frame_0001.jpg`` from different
folders apart. COCO: ``DIR/annotations.json`` whose ``file_name`` is relative to the workspace's
image root (also recorded under ``info``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel import detections as dets
from autolabel.detections import LabeledImage
from autolabel.errors import AutolabelError
from autolabel.preview import PreviewSummary
from autolabel.store import IMAGE_STATUSES

if TYPE_CHECKING:
    from autolabel.store import ImageRecord, Store
    from autolabel.workspace import Workspace

SOURCES = ("auto", "labels", "predictions")
FORMATS = ("yolo", "coco")
EXPORTABLE_STATUSES = tuple(s for s in IMAGE_STATUSES if s != "error")


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
            items.append(_labeled(record, labels[record.id], "labels"))
        elif record.id in predictions:
            items.append(_labeled(record, predictions[record.id][1], "predictions"))
        else:
            missing += 1
    return items, missing


def _labeled(record: ImageRecord, detections_json: str, source: str) -> LabeledImage:
    det = dets.from_json(detections_json)
    return LabeledImage(record.id, record.path, record.width, record.height, det, record.sha256, source)


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
    paths = yolo.mirrored_paths([item.path for item in items])
    entries = [(image_rel.relative_to("images"), item) for item, (image_rel, _) in zip(items, paths)]
    yolo.write_images(out_dir, image_root, entries, with_scores=with_scores)
    yolo.write_data_yaml(out_dir, names, train="images", val="images", path=str(out_dir))


def write_coco(image_root: Path, items: Sequence[LabeledImage], names: list[str], out_dir: Path) -> Path:
    from autolabel.formats import coco

    rows = [(i.id, i.path, i.width, i.height, i.detections) for i in items]
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


def _check_class_ids(items: Sequence[LabeledImage], names: list[str]) -> None:
    for item in items:
        det = item.detections
        if len(det) and (det.class_id.min() < 0 or det.class_id.max() >= len(names)):
            raise AutolabelError(
                f"{item.path}: class id {int(det.class_id.max())} is not among the workspace's "
                f"{len(names)} classes"
            )


# -- preview -----------------------------------------------------------------------------------


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

    from autolabel import preview

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
    summary = preview.write_preview(
        ws.image_root, [(item.path, item.detections) for item in chosen], names, out, tile_size=tile_size
    )
    if not summary.shown:
        raise AutolabelError("nothing to preview: none of the chosen images could be decoded")
    return summary
