"""What ``autolabel status`` reports, as plain data (the CLI renders it)."""

from __future__ import annotations

import json

from autolabel.store import IMAGE_STATUSES, Store


def collect_status(store: Store) -> dict:
    counts = store.status_counts()
    proposals = []
    rows = store.conn.execute(
        "SELECT model_version, COUNT(*), SUM(error IS NOT NULL),"
        " SUM(COALESCE(json_array_length(detections, '$.xyxy'), 0))"
        " FROM predictions GROUP BY model_version ORDER BY MIN(created_at)"
    )
    for version, images, errors, boxes in rows:
        proposals.append({"model_version": version, "images": images, "errors": errors or 0, "boxes": boxes or 0})
    labeled = store.labels()
    return {
        "images": {s: counts.get(s, 0) for s in IMAGE_STATUSES},
        "classes": store.class_names(),
        "proposals": proposals,
        "labeled_images": len(labeled),
        "labeled_boxes": sum(len(json.loads(v).get("xyxy", [])) for v in labeled.values()),
        "sections": [],
    }
