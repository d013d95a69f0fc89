"""YOLO txt: one ``class cx cy w h`` line per box, normalized to [0, 1] (optionally a trailing score)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from autolabel import detections as dets

if TYPE_CHECKING:
    import supervision as sv


class YoloFormatError(ValueError):
    pass


def to_lines(det: sv.Detections, width: int, height: int, with_scores: bool = False) -> list[str]:
    lines = []
    for i in range(len(det)):
        x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        line = f"{int(det.class_id[i])} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
        if with_scores and det.confidence is not None:
            line += f" {float(det.confidence[i]):.5f}"
        lines.append(line)
    return lines


def from_lines(lines: list[str], width: int, height: int) -> sv.Detections:
    """Parse YOLO lines into pixel boxes; blank lines are ignored, malformed ones raise YoloFormatError."""
    xyxy, class_id, scores = [], [], []
    for number, raw in enumerate(lines, start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) not in (5, 6):
            raise YoloFormatError(f"line {number}: expected 'class cx cy w h [score]', got {raw.strip()!r}")
        try:
            cls = int(float(parts[0]))
            cx, cy, w, h = (float(v) for v in parts[1:5])
            score = float(parts[5]) if len(parts) == 6 else None
        except ValueError:
            raise YoloFormatError(f"line {number}: not numbers: {raw.strip()!r}") from None
        if not all(math.isfinite(v) for v in (float(parts[0]), cx, cy, w, h, score or 0.0)):
            raise YoloFormatError(f"line {number}: not finite: {raw.strip()!r}")
        if float(parts[0]) != cls:
            raise YoloFormatError(f"line {number}: class id must be an integer, got {parts[0]}")
        if cls < 0:
            raise YoloFormatError(f"line {number}: class id must not be negative, got {parts[0]}")
        if w < 0 or h < 0:
            raise YoloFormatError(f"line {number}: negative width or height: {raw.strip()!r}")
        xyxy.append(
            [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        )
        class_id.append(cls)
        scores.append(score)
    if not xyxy:
        return dets.empty()
    confidence = None if any(s is None for s in scores) else np.asarray(scores, dtype=np.float32)
    return dets.make(xyxy, class_id, confidence)


def data_yaml(names: list[str], train: str, val: str, path: str | None = None) -> str:
    import yaml

    data: dict = {}
    if path is not None:
        data["path"] = path
    data.update({"train": train, "val": val, "nc": len(names), "names": dict(enumerate(names))})
    return yaml.safe_dump(data, sort_keys=False)
