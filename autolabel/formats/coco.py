"""COCO detection JSON: ``bbox`` is ``[x, y, w, h]`` in pixels from the top-left corner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from autolabel import detections as dets

if TYPE_CHECKING:
    import supervision as sv


__all__ = [
    "CocoFormatError",
    "annotations",
    "categories",
    "dataset",
    "image_detections",
    "validate",
]


def categories(names: list[str]) -> list[dict]:
    """COCO category ids start at 1; our class id i is category i + 1."""
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(names)]


def annotations(
    det: sv.Detections, image_id: int, first_id: int = 1, with_scores: bool = False
) -> list[dict]:
    out = []
    for i in range(len(det)):
        x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
        w, h = x2 - x1, y2 - y1
        ann = {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": int(det.class_id[i]) + 1,
            # 1/1000 px: a YOLO-derived box survives the round trip within 1e-3 px.
            "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)],
            "area": round(w * h, 3),
            "iscrowd": 0,
        }
        if with_scores and det.confidence is not None:
            ann["score"] = round(float(det.confidence[i]), 5)
        out.append(ann)
    return out


def dataset(
    names: list[str],
    images: Iterable[tuple[int, str, int, int, sv.Detections]],
    with_scores: bool = False,
) -> dict:
    """Build a COCO dict from (image_id, file_name, width, height, detections) tuples."""
    coco_images, coco_annotations = [], []
    for image_id, file_name, width, height, det in images:
        coco_images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        coco_annotations += annotations(det, image_id, len(coco_annotations) + 1, with_scores)
    return {"images": coco_images, "annotations": coco_annotations, "categories": categories(names)}


class CocoFormatError(ValueError):
    """The file is not COCO detection JSON the importer can trust; the message says where."""


def validate(coco) -> list[tuple]:
    """Check the structure ``image_detections`` relies on; raise ``CocoFormatError`` naming the first
    problem. Returns (annotation id, image id) of annotations whose image is not in ``images``."""
    if (
        not isinstance(coco, dict)
        or not isinstance(coco.get("images"), list)
        or not isinstance(coco.get("categories"), list)
    ):
        raise CocoFormatError("a COCO file needs 'images' and 'categories' lists")
    annotations = coco.get("annotations", [])
    if not isinstance(annotations, list):
        raise CocoFormatError("'annotations' must be a list")
    category_ids = set()
    for i, c in enumerate(coco["categories"]):
        _need(c, ("id", "name"), f"categories[{i}]")
        category_ids.add(c["id"])
    image_ids = set()
    for i, im in enumerate(coco["images"]):
        _need(im, ("id", "file_name"), f"images[{i}]")
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise CocoFormatError(f"images[{i}]: 'file_name' must be a non-empty string")
        if im["id"] in image_ids:
            raise CocoFormatError(f"images[{i}]: image id {im['id']!r} appears twice")
        image_ids.add(im["id"])
    orphans = []
    for i, a in enumerate(annotations):
        where = f"annotations[{i}]" + (f" (id {a['id']})" if isinstance(a, dict) and "id" in a else "")
        _need(a, ("id", "image_id", "category_id", "bbox"), where)
        box = a["bbox"]
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise CocoFormatError(f"{where}: 'bbox' must be [x, y, width, height] numbers, got {box!r:.60}")
        if box[2] < 0 or box[3] < 0:
            raise CocoFormatError(f"{where}: 'bbox' has a negative width or height: {box}")
        if a["category_id"] not in category_ids:
            raise CocoFormatError(f"{where}: category id {a['category_id']!r} is not in 'categories'")
        if "score" in a and not _is_number(a["score"]):
            raise CocoFormatError(f"{where}: 'score' must be a number")
        if a["image_id"] not in image_ids:
            orphans.append((a["id"], a["image_id"]))
    return orphans


def _need(item, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(item, dict):
        raise CocoFormatError(f"{where}: expected an object, got {type(item).__name__}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise CocoFormatError(f"{where}: missing {', '.join(repr(k) for k in missing)}")


def _is_number(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def image_detections(coco: dict) -> dict[int, sv.Detections]:
    """image id -> detections (class id = category position in ``categories``)."""
    position = {c["id"]: i for i, c in enumerate(coco["categories"])}
    grouped: dict[int, list[dict]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco.get("annotations", []):
        grouped.setdefault(ann["image_id"], []).append(ann)
    out = {}
    for image_id, anns in grouped.items():
        if not anns:
            out[image_id] = dets.empty()
            continue
        xyxy = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ]
        scores = [a.get("score") for a in anns]
        out[image_id] = dets.make(
            xyxy,
            [position[a["category_id"]] for a in anns],
            None if any(s is None for s in scores) else scores,
        )
    return out
