"""COCO detection JSON: ``bbox`` is ``[x, y, w, h]`` in pixels from the top-left corner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from autolabel import detections as dets

if TYPE_CHECKING:
    import supervision as sv


def categories(names: list[str]) -> list[dict]:
    """COCO category ids start at 1; our class id i is category i + 1."""
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(names)]


def annotations(det: sv.Detections, image_id: int, first_id: int = 1, with_scores: bool = False) -> list[dict]:
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
        xyxy = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        scores = [a.get("score") for a in anns]
        out[image_id] = dets.make(
            xyxy,
            [position[a["category_id"]] for a in anns],
            None if any(s is None for s in scores) else scores,
        )
    return out
