"""Label Studio JSON: RectangleLabels results <-> detections (pure functions, no I/O).

A Label Studio rectangle is ``x, y, width, height`` in percent of the image size, measured from the
top-left corner, plus a ``rotation`` in degrees (clockwise, around the top-left corner, applied in
pixel space). Rotated rectangles become their enclosing axis-aligned box; boxes reaching outside
the image are clipped to it and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import numpy as np

from autolabel import detections as dets

if TYPE_CHECKING:
    import supervision as sv

__all__ = [
    "BOX_KEYS",
    "FROM_NAME",
    "HOTKEYS",
    "IMAGE_KEY",
    "RESULT_TYPE",
    "TO_NAME",
    "UNSUPPORTED_REGION_TYPES",
    "Conversion",
    "from_results",
    "label_colour",
    "label_config",
    "prediction",
    "rectangle_corners",
    "task_score",
    "to_results",
]

FROM_NAME = "label"
TO_NAME = "image"
IMAGE_KEY = "image"
RESULT_TYPE = "rectanglelabels"

# Distinct label colours, cycled by class id so a class keeps its colour forever.
_COLOURS = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#800000",
    "#aaffc3",
    "#808000",
    "#000075",
)


# Label hotkeys by class id: the digit row, then letters Label Studio's own shortcuts leave free.
HOTKEYS = tuple("1234567890") + tuple("qwertyiopasdfgjklzxcvbnm")


def label_colour(class_id: int) -> str:
    """A class's colour: the distinct palette first, then hues spread by the golden angle."""
    if class_id < len(_COLOURS):
        return _COLOURS[class_id]
    import colorsys

    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.5 + 0.4 * ((class_id // len(_COLOURS)) % 2))
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def label_config(class_names: list[str]) -> str:
    """RectangleLabels config; labels in class-id order (ids never change, new classes append),
    each with its own colour and, for the first ``len(HOTKEYS)``, its own hotkey."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} background={quoteattr(label_colour(i))}"
        + (f' hotkey="{HOTKEYS[i]}"' if i < len(HOTKEYS) else "")
        + "/>"
        for i, name in enumerate(class_names)
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="${IMAGE_KEY}" zoom="true" zoomControl="true"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        "</View>"
    )


def to_results(det: sv.Detections, class_names: list[str], width: int, height: int) -> list[dict]:
    """Pixel boxes -> Label Studio prediction results (percent, from the top-left corner)."""
    results = []
    for i in range(len(det)):
        x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
        item = {
            "id": f"p{i}",
            "type": RESULT_TYPE,
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {
                "x": 100.0 * x1 / width,
                "y": 100.0 * y1 / height,
                "width": 100.0 * (x2 - x1) / width,
                "height": 100.0 * (y2 - y1) / height,
                "rotation": 0,
                "rectanglelabels": [class_names[int(det.class_id[i])]],
            },
        }
        if det.confidence is not None:
            item["score"] = round(float(det.confidence[i]), 5)
        results.append(item)
    return results


def task_score(det: sv.Detections) -> float:
    """One number per task for ordering (Label Studio's 'prediction score' sampling): mean box confidence."""
    if len(det) == 0 or det.confidence is None:
        return 0.0
    return round(float(np.mean(det.confidence)), 5)


def prediction(
    det: sv.Detections, class_names: list[str], width: int, height: int, model_version: str
) -> dict:
    return {
        "model_version": model_version,
        "score": task_score(det),
        "result": to_results(det, class_names, width, height),
    }


@dataclass
class Conversion:
    """Detections from one annotation, plus what was adjusted on the way."""

    detections: sv.Detections
    clipped: int = 0  # boxes partly outside the image, clipped to it
    rotated: int = 0  # rotated rectangles replaced by their enclosing box
    unknown_labels: set[str] = field(default_factory=set)
    ignored: int = 0  # results that carry no region (choices, text areas, relations)
    refused: list[str] = field(
        default_factory=list
    )  # why results could not be read: the annotation is held back

    @property
    def usable(self) -> bool:
        """False when turning this annotation into labels would lose or invent something."""
        return not self.refused and not self.unknown_labels


# Region results that are labels too, but not boxes: reading past them would turn an annotated
# image into "verified empty" (a false negative taught to the student), so they are refused.
UNSUPPORTED_REGION_TYPES = ("polygonlabels", "keypointlabels", "brushlabels", "ellipselabels",
                            "polygon", "keypoint", "brush", "ellipse", "labels", "hypertextlabels")  # fmt: skip
BOX_KEYS = ("x", "y", "width", "height")


def rectangle_corners(value: dict, width: float, height: float) -> np.ndarray:
    """The four pixel corners of a (possibly rotated) rectangle result value."""
    x = float(value["x"]) * width / 100.0
    y = float(value["y"]) * height / 100.0
    w = float(value["width"]) * width / 100.0
    h = float(value["height"]) * height / 100.0
    theta = math.radians(float(value.get("rotation") or 0.0))
    cos, sin = math.cos(theta), math.sin(theta)
    local = np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]])
    rot = np.array([[cos, -sin], [sin, cos]])
    return local @ rot.T + np.array([x, y])


def from_results(results: list[dict], class_names: list[str], width: int, height: int) -> Conversion:
    """Annotation results -> pixel detections (class ids index ``class_names``).

    ``width``/``height`` are the stored image size; a result carrying ``original_width`` /
    ``original_height`` uses those for the percent conversion and is rescaled to the stored size.
    Unknown labels are collected (not raised) so the caller can report them all at once.
    """
    index = {name: i for i, name in enumerate(class_names)}
    xyxy, class_id, scores = [], [], []
    out = Conversion(detections=dets.empty())
    if results is not None and not isinstance(results, list):
        out.refused.append(f"'result' is a {type(results).__name__}, not a list")
        return out
    seen_ids: set = set()
    for n, item in enumerate(results or []):
        where = f"result {n + 1}"
        if not isinstance(item, dict):
            out.refused.append(f"{where}: not an object")
            continue
        value = item.get("value") or {}
        if not isinstance(value, dict):
            out.refused.append(f"{where}: 'value' is not an object")
            continue
        kind = str(item.get("type") or "")
        region = [k for k in UNSUPPORTED_REGION_TYPES if k == kind or k in value]
        if kind != RESULT_TYPE and "rectanglelabels" not in value:
            if region:
                out.refused.append(f"{where}: {region[0]} regions are not supported (only rectangles)")
            else:
                out.ignored += 1
            continue
        labels = value.get("rectanglelabels") or []
        if not isinstance(labels, list) or not labels:
            out.refused.append(f"{where}: a rectangle without a label")
            continue
        name = str(labels[0])
        if name not in index:
            out.unknown_labels.add(name)
            continue
        problem = _box_problem(value, item)
        if problem:
            out.refused.append(f"{where}: {problem}")
            continue
        if item.get("id") is not None:
            if item["id"] in seen_ids:  # the same region twice (a client bug): one box, said so
                out.refused.append(f"{where}: region id {item['id']!r} appears twice")
                continue
            seen_ids.add(item["id"])
        src_w = float(item.get("original_width") or width)
        src_h = float(item.get("original_height") or height)
        corners = rectangle_corners(value, src_w, src_h)
        if abs(float(value.get("rotation") or 0.0)) % 360 > 1e-6:
            out.rotated += 1
        corners *= np.array([width / src_w, height / src_h])
        x1, y1 = corners.min(axis=0)
        x2, y2 = corners.max(axis=0)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
            out.refused.append(f"{where}: the box lies outside the image")
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2) and _beyond(x1, y1, x2, y2, width, height):
            out.clipped += 1
        xyxy.append([cx1, cy1, cx2, cy2])
        class_id.append(index[name])
        scores.append(item.get("score"))
    if xyxy:
        confidence = None if any(s is None for s in scores) else scores
        out.detections = dets.make(xyxy, class_id, confidence)
    return out


def _box_problem(value: dict, item: dict) -> str | None:
    """Why a rectangle's numbers cannot be trusted, or None."""
    for key in BOX_KEYS:
        if key not in value:
            return f"missing '{key}'"
    numbers = {}
    for key in (*BOX_KEYS, "rotation"):
        raw = value.get(key, 0.0)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            if key == "rotation" and raw is None:
                continue
            return f"'{key}' is not a finite number ({raw!r:.30})"
        numbers[key] = float(raw)
    if numbers["width"] <= 0 or numbers["height"] <= 0:
        return f"width/height must be positive (got {numbers['width']:g} x {numbers['height']:g})"
    if max(abs(numbers[k]) for k in BOX_KEYS) > 1e4:
        return "coordinates far outside the 0-100 percent range"
    for key in ("original_width", "original_height"):
        raw = item.get(key)
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw <= 0):
            return f"'{key}' must be a positive number ({raw!r:.30})"
    return None


def _beyond(x1, y1, x2, y2, width, height, tolerance: float = 1e-3) -> bool:
    # Percent round-off may put an edge a hair outside; that is not a clipped box.
    return x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance
