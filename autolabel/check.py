"""Look at labels the way training will load them, and flag the usual mistakes.

Labels are turned into YOLO lines and parsed back with ``autolabel.formats.yolo`` (store labels),
or read from a YOLO folder as they are, then checked per image:

- ``malformed``: a line that is not ``class cx cy w h``.
- ``unknown class``: a class id outside the class names.
- ``degenerate box``: width or height under one pixel.
- ``out of range``: a box reaching more than half a pixel beyond the image.
- ``shifted labels``: boxes sit about half their own size away from the image content.

The shift heuristic: for each box, take a window twice the box's size around it, weigh every
pixel by its gradient magnitude above the window's median (object outlines and details), and
measure how far that weight's centroid lies from the box centre, in units of the box's width
and height. A correct box has its content centred (median offset ~0); the classic mix-up of
writing the top-left corner ``x y`` where YOLO expects the centre moves every box up-left by
half its size, so its content centroid sits near the box's bottom-right corner (offset ~+0.4
in x and y). An image is flagged when the median offsets over its boxes both point the same
way and sum to more than ``SHIFT_THRESHOLD`` (0.4). Measured on 60 synthetic scenes: correct
labels sum to -0.12..0.16 (5th-95th percentile), corner-as-centre labels 0.53..0.91, the reverse
mix-up -0.90..-0.39. Across the dataset, boxes hanging off mostly one pair of edges
(left/top or right/bottom) is reported as a second sign of the same mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.store import Store

__all__ = [
    "SHIFT_THRESHOLD",
    "CheckResult",
    "Finding",
    "LabelItem",
    "box_findings",
    "check_labels",
    "content_offset",
    "items_from_store",
    "items_from_yolo",
]

SHIFT_THRESHOLD = 0.4
EDGE_TOLERANCE = 0.5  # pixels
MAX_CONTENT_CHECKS = 500  # images decoded for the shift heuristic


@dataclass(frozen=True)
class LabelItem:
    name: str  # what the user recognizes: the image's relative path
    image_path: Path
    lines: tuple[str, ...]  # YOLO lines as training reads them
    width: int
    height: int


@dataclass(frozen=True)
class Finding:
    image: str
    problem: str
    detail: str


@dataclass
class CheckResult:
    images: int
    boxes: int
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)  # dataset-level observations
    grid: Path | None = None

    @property
    def flagged_images(self) -> list[str]:
        return sorted({f.image for f in self.findings})


def box_findings(det: sv.Detections, width: int, height: int, n_classes: int | None) -> list[tuple[str, str]]:
    """(problem, detail) for every bad box of one image: pure, on pixel boxes."""
    out = []
    for i in range(len(det)):
        x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
        cid = int(det.class_id[i])
        where = f"box {i + 1} [{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}]"
        if n_classes is not None and not 0 <= cid < n_classes:
            out.append(("unknown class", f"{where}: class id {cid} (have {n_classes} classes)"))
        if x2 - x1 < 1 or y2 - y1 < 1:
            out.append(("degenerate box", f"{where}: {x2 - x1:.2f}x{y2 - y1:.2f} px"))
        sides = [
            name
            for name, beyond in (("left", -x1), ("top", -y1), ("right", x2 - width), ("bottom", y2 - height))
            if beyond > EDGE_TOLERANCE
        ]
        if sides:
            out.append(("out of range", f"{where}: beyond the {'/'.join(sides)} edge of {width}x{height}"))
    return out


def _gradient_energy(rgb: np.ndarray) -> np.ndarray:
    gray = rgb.astype(np.float32).mean(axis=2)
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1] = gray[2:] - gray[:-2]
    return np.hypot(gx, gy)


def content_offset(rgb: np.ndarray, det: sv.Detections) -> tuple[float, float] | None:
    """Median (dx, dy) of content centroids from box centres, in box widths/heights; None if no box."""
    energy = _gradient_energy(rgb)
    height, width = energy.shape
    offsets = []
    for x1, y1, x2, y2 in det.xyxy.astype(float):
        w, h = x2 - x1, y2 - y1
        if w < 2 or h < 2:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, right = int(max(0, np.floor(cx - w))), int(min(width, np.ceil(cx + w)))
        top, bottom = int(max(0, np.floor(cy - h))), int(min(height, np.ceil(cy + h)))
        if right - left < 2 or bottom - top < 2:
            continue
        window = energy[top:bottom, left:right]
        weight = np.maximum(window - np.median(window), 0)
        total = float(weight.sum())
        if total <= 0:
            continue
        xs = np.arange(left, right) + 0.5
        ys = np.arange(top, bottom) + 0.5
        mx = float((weight.sum(axis=0) * xs).sum()) / total
        my = float((weight.sum(axis=1) * ys).sum()) / total
        offsets.append(((mx - cx) / w, (my - cy) / h))
    if not offsets:
        return None
    dx, dy = np.median(np.asarray(offsets), axis=0)
    return float(dx), float(dy)


def shift_problem(offset: tuple[float, float] | None) -> str | None:
    if offset is None:
        return None
    dx, dy = offset
    if dx * dy <= 0 or abs(dx + dy) < SHIFT_THRESHOLD:
        return None
    if dx > 0:
        return (
            f"boxes sit up-left of their content by ~({dx:.2f}, {dy:.2f}) of their size:"
            " top-left x y written where YOLO expects the centre?"
        )
    return (
        f"boxes sit down-right of their content by ~({-dx:.2f}, {-dy:.2f}) of their size:"
        " centre x y written where the top-left corner was expected?"
    )


def items_from_store(store: Store, image_root: Path) -> list[LabelItem]:
    """Verified labels of the store, as YOLO lines (the round trip training data goes through)."""
    from autolabel import detections as dets
    from autolabel.formats import yolo

    labels = store.labels()
    items = []
    for im in store.images(ids=sorted(labels)):
        if not im.width or not im.height:
            continue
        det = dets.from_json(labels[im.id])
        lines = tuple(yolo.to_lines(det, im.width, im.height))
        items.append(LabelItem(im.path, image_root / im.path, lines, im.width, im.height))
    return items


def items_from_yolo(labels_dir: Path, images_dir: Path) -> list[LabelItem]:
    """Every image below ``images_dir`` that has a mirrored .txt below ``labels_dir``."""
    from PIL import Image

    from autolabel.images import discover

    items = []
    for path in discover(images_dir):
        rel = path.relative_to(images_dir)
        label = (labels_dir / rel).with_suffix(".txt")
        if not label.is_file():
            continue
        try:
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees
                    width, height = height, width
        except OSError:
            continue
        items.append(LabelItem(rel.as_posix(), path, tuple(label.read_text().splitlines()), width, height))
    return items


def check_labels(
    items: Sequence[LabelItem],
    class_names: Sequence[str] | None,
    n: int = 16,
    out: Path | None = None,
    max_content_checks: int = MAX_CONTENT_CHECKS,
) -> CheckResult:
    """Check every item; decode up to ``max_content_checks`` (spread evenly) for the shift test;
    draw ``n`` of them (flagged ones first) into ``out`` when given."""
    from autolabel.formats.yolo import YoloFormatError, from_lines
    from autolabel.images import ImageDecodeError, decode

    n_classes = None if class_names is None else len(class_names)
    findings: list[Finding] = []
    parsed: dict[str, sv.Detections] = {}
    boxes = 0
    edge_sides = {"left/top": 0, "right/bottom": 0}
    for item in items:
        try:
            det = from_lines(list(item.lines), item.width, item.height)
        except YoloFormatError as exc:
            findings.append(Finding(item.name, "malformed", str(exc)))
            continue
        parsed[item.name] = det
        boxes += len(det)
        for problem, detail in box_findings(det, item.width, item.height, n_classes):
            findings.append(Finding(item.name, problem, detail))
        if len(det):
            x1, y1, x2, y2 = det.xyxy.T
            edge_sides["left/top"] += int(((x1 < -EDGE_TOLERANCE) | (y1 < -EDGE_TOLERANCE)).sum())
            edge_sides["right/bottom"] += int(
                ((x2 > item.width + EDGE_TOLERANCE) | (y2 > item.height + EDGE_TOLERANCE)).sum()
            )

    with_boxes = [item for item in items if len(parsed.get(item.name, ())) > 0]
    step = max(1, len(with_boxes) / max(1, max_content_checks))
    sampled = [with_boxes[int(i * step)] for i in range(min(len(with_boxes), max_content_checks))]
    pixels: dict[str, np.ndarray] = {}
    offsets = []
    for item in sampled:
        try:
            rgb = decode(item.image_path).pixels
        except ImageDecodeError as exc:
            findings.append(Finding(item.name, "unreadable image", str(exc)))
            continue
        pixels[item.name] = rgb
        offset = content_offset(rgb, parsed[item.name])
        problem = shift_problem(offset)
        if offset is not None:
            offsets.append(offset)
        if problem:
            findings.append(Finding(item.name, "shifted labels", problem))

    notes = _dataset_notes(offsets, edge_sides, boxes, len(sampled))
    result = CheckResult(images=len(items), boxes=boxes, findings=findings, notes=notes)
    if out is not None and items:
        result.grid = _draw(items, parsed, pixels, findings, class_names, n, out)
    return result


def _dataset_notes(offsets, edge_sides: dict[str, int], boxes: int, checked: int) -> list[str]:
    notes = []
    if offsets:
        flagged = sum(1 for o in offsets if shift_problem(o))
        if flagged >= max(2, 0.3 * len(offsets)):
            dx, dy = np.median(np.asarray(offsets), axis=0)
            notes.append(
                f"{flagged} of {checked} images look shifted (median content offset {dx:+.2f}, {dy:+.2f}"
                " of box size): check the label format (centre vs top-left corner)"
            )
    hanging = sum(edge_sides.values())
    if boxes and hanging >= max(3, 0.1 * boxes):
        side, count = max(edge_sides.items(), key=lambda kv: kv[1])
        if count >= 0.8 * hanging:
            notes.append(
                f"{hanging} of {boxes} boxes hang off the image, {count} of them off the {side} edges:"
                " labels look systematically shifted"
            )
    return notes


def _draw(items, parsed, pixels, findings, class_names, n, out) -> Path:
    from autolabel import detections as dets
    from autolabel.images import ImageDecodeError, decode
    from autolabel.preview import render_grid

    problems: dict[str, list[str]] = {}
    for f in findings:
        problems.setdefault(f.image, [])
        if f.problem not in problems[f.image]:
            problems[f.image].append(f.problem)
    flagged = [item for item in items if item.name in problems]
    clean = [item for item in items if item.name not in problems]
    chosen = flagged[:n]
    if len(chosen) < n and clean:
        room = n - len(chosen)
        step = max(1, len(clean) / room)
        chosen += [clean[int(i * step)] for i in range(min(room, len(clean)))]
    tiles, titles = [], []
    names = list(class_names) if class_names is not None else []
    for item in chosen:
        rgb = pixels.get(item.name)
        if rgb is None:
            try:
                rgb = decode(item.image_path).pixels
            except ImageDecodeError:
                continue
        tiles.append((rgb, parsed.get(item.name, dets.empty())))
        flags = problems.get(item.name)
        titles.append(f"{item.name}" + (f" [{', '.join(flags)}]" if flags else ""))
    if not tiles:
        raise AutolabelError("none of the labeled images could be read to draw the check grid")
    return render_grid(tiles, names, out, titles=titles)
