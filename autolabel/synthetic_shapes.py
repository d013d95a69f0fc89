"""The objects of the synthetic scenes: fastener outlines, their rasterized patches, paint.

Objects are drawn in small patches (a bool mask with its offset in the image) rather than on the
full canvas, which keeps a scene with many objects cheap; ``keeps_visible`` is the placement rule
that no labeled object is hidden below ``MIN_VISIBLE`` of its own drawn area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_VISIBLE = 0.5
_MATERIALS = {  # RGB base colours of common fastener finishes
    "steel": (178, 180, 184),
    "zinc": (196, 204, 214),
    "brass": (196, 160, 78),
    "black_oxide": (58, 58, 62),
    "copper": (184, 112, 72),
}


def _regular_polygon(sides: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.arange(sides) * 2 * math.pi / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius


def fastener(cls: int, length: float, center, angle: float, rng: np.random.Generator):
    """Polygons (points Nx2 in local coords, fill) of one fastener and its darker details."""
    shapes: list[tuple[np.ndarray, int]] = []
    details: list[tuple[np.ndarray, int]] = []
    tilt = float(rng.uniform(0.55, 1.0))  # flat parts seen at an angle become ellipses
    if cls == 1:  # nut: hexagon with a threaded hole, chamfer ring
        r = length / 2
        shapes.append((_regular_polygon(6, r, rng.uniform(0, math.pi)) * (1, tilt), 1))
        shapes.append((_regular_polygon(24, r * 0.45) * (1, tilt), 0))
        ring = _regular_polygon(24, r * 0.62) * (1, tilt)
        details.append((ring, 1))
        details.append((_regular_polygon(24, r * 0.5) * (1, tilt), 0))
    elif cls == 2:  # washer: a flat ring
        r = length / 2
        inner = rng.uniform(0.4, 0.6)
        shapes.append((_regular_polygon(32, r) * (1, tilt), 1))
        shapes.append((_regular_polygon(24, r * inner) * (1, tilt), 0))
        details.append((_regular_polygon(32, r) * (1, tilt), 1))
        details.append((_regular_polygon(32, r * 0.9) * (1, tilt), 0))
    elif cls == 0:  # bolt, side view: hex head + threaded shank with a chamfered tip
        L = length
        head_w, head_h, shank = (
            L * rng.uniform(0.14, 0.2),
            L * rng.uniform(0.18, 0.24),
            L * rng.uniform(0.08, 0.11),
        )
        x0 = -L / 2
        shapes.append(
            (np.array([[x0, -head_h], [x0 + head_w, -head_h], [x0 + head_w, head_h], [x0, head_h]]), 1)
        )
        tip = L * 0.03
        shapes.append(
            (
                np.array(
                    [
                        [x0 + head_w, -shank],
                        [L / 2 - tip, -shank],
                        [L / 2, -shank + tip],
                        [L / 2, shank - tip],
                        [L / 2 - tip, shank],
                        [x0 + head_w, shank],
                    ]
                ),
                1,
            )
        )
        details.append(
            (
                np.array(
                    [
                        [x0, -head_h * 0.34],
                        [x0 + head_w, -head_h * 0.34],
                        [x0 + head_w, -head_h * 0.26],
                        [x0, -head_h * 0.26],
                    ]
                ),
                1,
            )
        )
        pitch = max(2.0, L * 0.05)
        x = x0 + head_w + L * rng.uniform(0.1, 0.4)
        while x < L / 2 - pitch:
            details.append(
                (
                    np.array(
                        [
                            [x, -shank],
                            [x + pitch * 0.35, -shank],
                            [x + pitch * 0.55, shank],
                            [x + pitch * 0.2, shank],
                        ]
                    ),
                    1,
                )
            )
            x += pitch
    else:  # screw, side view: countersunk head, threaded taper to a point
        L = length
        head = L * rng.uniform(0.1, 0.14)
        head_h, shank = L * rng.uniform(0.15, 0.2), L * rng.uniform(0.05, 0.075)
        x0 = -L / 2
        shapes.append(
            (
                np.array(
                    [
                        [x0, -head_h],
                        [x0 + head * 0.25, -head_h],
                        [x0 + head, -shank],
                        [x0 + head, shank],
                        [x0 + head * 0.25, head_h],
                        [x0, head_h],
                    ]
                ),
                1,
            )
        )
        body_end = L / 2 - L * 0.2
        shapes.append(
            (
                np.array(
                    [
                        [x0 + head, -shank],
                        [body_end, -shank],
                        [L / 2, 0.0],
                        [body_end, shank],
                        [x0 + head, shank],
                    ]
                ),
                1,
            )
        )
        details.append(
            (
                np.array(
                    [
                        [x0, -head_h * 0.15],
                        [x0 + head * 0.4, -head_h * 0.15],
                        [x0 + head * 0.4, head_h * 0.15],
                        [x0, head_h * 0.15],
                    ]
                ),
                1,
            )
        )
        pitch = max(2.0, L * 0.06)
        x = x0 + head + pitch
        while x < body_end:
            details.append(
                (
                    np.array(
                        [
                            [x, -shank],
                            [x + pitch * 0.3, -shank],
                            [x + pitch * 0.7, shank],
                            [x + pitch * 0.4, shank],
                        ]
                    ),
                    1,
                )
            )
            x += pitch
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    offset = np.asarray(center, dtype=np.float64)
    place = lambda items: [(pts @ rotation.T + offset, fill) for pts, fill in items]
    return place(shapes), place(details)


@dataclass
class Patch:
    """A bool mask of the pixels [y0, y0 + h) x [x0, x0 + w) of the image: objects stay small."""

    x0: int
    y0: int
    mask: np.ndarray

    def window(self, other: Patch) -> tuple[slice, slice, slice, slice] | None:
        """(self rows, self cols, other rows, other cols) of the overlap, or None."""
        top, left = max(self.y0, other.y0), max(self.x0, other.x0)
        bottom = min(self.y0 + self.mask.shape[0], other.y0 + other.mask.shape[0])
        right = min(self.x0 + self.mask.shape[1], other.x0 + other.mask.shape[1])
        if bottom <= top or right <= left:
            return None
        return (
            slice(top - self.y0, bottom - self.y0),
            slice(left - self.x0, right - self.x0),
            slice(top - other.y0, bottom - other.y0),
            slice(left - other.x0, right - other.x0),
        )

    def overlap(self, other: Patch) -> int:
        win = self.window(other)
        if win is None:
            return 0
        return int((self.mask[win[0], win[1]] & other.mask[win[2], win[3]]).sum())

    def cut(self, other: Patch) -> None:
        """Remove the pixels that ``other`` covers (it was drawn on top)."""
        win = self.window(other)
        if win is not None:
            self.mask[win[0], win[1]] &= ~other.mask[win[2], win[3]]

    def box(self) -> list[float]:
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        return [
            float(self.x0 + cols[0]),
            float(self.y0 + rows[0]),
            float(self.x0 + cols[-1] + 1),
            float(self.y0 + rows[-1] + 1),
        ]

    def full(self, width: int, height: int) -> np.ndarray:
        out = np.zeros((height, width), bool)
        h, w = self.mask.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.mask
        return out


def rasterize(
    polygons: list[tuple[np.ndarray, int]], width: int, height: int, frame: Patch | None = None
) -> Patch | None:
    """Draw (points, fill) polygons in order (fill 0 cuts holes) into a patch of the image.

    The patch spans the polygons' extent clipped to the image (or ``frame``'s extent); integer
    offsets keep the rasterization identical to drawing on the full canvas. None: all outside.
    """
    from PIL import Image, ImageDraw

    if frame is not None:
        x0, y0 = frame.x0, frame.y0
        x1, y1 = x0 + frame.mask.shape[1], y0 + frame.mask.shape[0]
    else:
        points = np.concatenate([p for p, _ in polygons])
        x0, y0 = (max(0, math.floor(v) - 1) for v in points.min(axis=0))
        x1 = min(width, math.ceil(points[:, 0].max()) + 2)
        y1 = min(height, math.ceil(points[:, 1].max()) + 2)
        if x1 <= x0 or y1 <= y0:
            return None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    offset = np.array([x0, y0], dtype=np.float64)
    for points, fill in polygons:
        draw.polygon([tuple(p) for p in (points - offset).tolist()], fill=255 if fill else 0)
    return Patch(x0, y0, np.asarray(canvas) > 0)


def shape_area(polygons: list[tuple[np.ndarray, int]]) -> float:
    """Area of the filled outlines (holes ignored: this only bounds how much fell off the image)."""
    total = 0.0
    for points, fill in polygons:
        if fill:
            x, y = points[:, 0], points[:, 1]
            total += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return total


def keeps_visible(new: Patch, placed: list[Patch], visible: list[Patch]) -> bool:
    """Would every placed object keep MIN_VISIBLE of its own area once ``new`` is drawn on top?"""
    for full, seen in zip(placed, visible):
        if seen.overlap(new) and seen.mask.sum() - seen.overlap(new) < MIN_VISIBLE * full.mask.sum():
            return False
    return True


def material_color(image: np.ndarray, patch: Patch, rng: np.random.Generator) -> np.ndarray:
    """A fastener finish that stands out from what lies beneath it."""
    ys, xs = np.nonzero(patch.mask[::2, ::2])
    under = image[patch.y0 + ys * 2, patch.x0 + xs * 2].mean(axis=0) if len(xs) else np.zeros(3, np.float32)
    names = list(_MATERIALS)
    order = rng.permutation(len(names))
    best, best_gap = None, -1.0
    for i in order:
        color = np.asarray(_MATERIALS[names[i]], np.float32)
        gap = float(np.abs(color - under).mean())
        if gap >= 45:
            return color * rng.uniform(0.92, 1.08)
        if gap > best_gap:
            best, best_gap = color, gap
    return best


def paint(image: np.ndarray, patch: Patch, color, rng: np.random.Generator, detail) -> None:
    """Fill a patch's mask with a colour under a directional shading gradient; darken details."""
    ys, xs = np.nonzero(patch.mask)
    if len(xs) == 0:
        return
    angle = rng.uniform(0, 2 * math.pi)
    proj = (xs * math.cos(angle) + ys * math.sin(angle)).astype(np.float32)
    low = proj.min()
    span = max(float(proj.max() - low), 1.0)
    shade = 0.8 + (0.35 / span) * (proj - low)
    if detail is not None:
        shade = np.where(detail[ys, xs], shade * 0.6, shade)
    image[patch.y0 + ys, patch.x0 + xs] = np.asarray(color, np.float32)[None, :] * shade[:, None]


def occluder_mask(width: int, height: int, rng: np.random.Generator) -> Patch | None:
    """A piece of rag/paper pushed in from one edge."""
    edge = int(rng.integers(4))
    depth = rng.uniform(0.1, 0.3)
    span = sorted(rng.uniform(0, 1, size=2))
    if edge == 0:
        points = [
            (span[0] * width, 0),
            (span[1] * width, 0),
            (span[1] * width, depth * height),
            (span[0] * width, depth * height * 0.7),
        ]
    elif edge == 1:
        points = [
            (span[0] * width, height),
            (span[1] * width, height),
            (span[1] * width, (1 - depth) * height),
            (span[0] * width, (1 - depth * 0.7) * height),
        ]
    elif edge == 2:
        points = [
            (0, span[0] * height),
            (0, span[1] * height),
            (depth * width, span[1] * height),
            (depth * width * 0.7, span[0] * height),
        ]
    else:
        points = [
            (width, span[0] * height),
            (width, span[1] * height),
            ((1 - depth) * width, span[1] * height),
            ((1 - depth * 0.7) * width, span[0] * height),
        ]
    return rasterize([(np.asarray(points, dtype=np.float64), 1)], width, height)
