"""Synthetic fastener scenes with exact boxes, for tests, the demo and benchmarks.

Everything is drawn with numpy + PIL (+ cv2 for blur), deterministic for a given
``numpy.random.Generator`` state, and fast: with a shared ``cache`` dict about 125 scenes per
CPU-second at 256 px, 105 at 320 px, 25 at 640 px (objects are drawn in small patches, the
session's texture, light field and noise bank are reused); ``generate_dataset`` including JPEG
writes about 120 per CPU-second at 256 px.

Classes (same order as ``prompts/fasteners.yaml``)::

    CLASS_NAMES = ("bolt", "nut", "washer", "screw")   # class_id 0..3

API::

    rng = np.random.default_rng(0)
    style = sample_style(rng)                      # one capture session: background, lighting, blur
    cache = {}                                     # optional; reuse across calls for speed
    rgb, det = generate_scene(rng, imgsz=256, style=style, cache=cache)
    # rgb: (imgsz, imgsz, 3) uint8 RGB; det: supervision.Detections with
    #   xyxy (float32 pixels, x2/y2 exclusive: a box [x1, x2) covers columns x1..x2-1),
    #   class_id (index into CLASS_NAMES), confidence None,
    #   mask (N, H, W) bool visible masks when with_masks=True.

    summary = generate_dataset("out/", n=100, seed=0, imgsz=320, groups=10)
    # out/images/g03/g03_0042.jpg, out/labels/g03/g03_0042.txt (YOLO), out/data.yaml

Box definition: the tight axis-aligned box of the object's *visible* pixels (after clipping to
the image and after occlusion by objects and occluders drawn on top of it), computed from the
binary mask before the whole image is blurred; blur widens the visible edge by about one sigma.
Placement keeps at least ``MIN_VISIBLE`` of every labeled object's own drawn area visible, so an
object is never hidden so far that its label would be a guess.

A *group* (``SceneStyle``) mimics a capture session: the same background texture (shifted a little
per frame, like a handheld camera), the same lighting and similar blur; frames within a group are
correlated, which is what group-aware train/val splitting must respect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv

__all__ = [
    "CLASS_NAMES",
    "DIFFICULTY",
    "MIN_VISIBLE",
    "SceneStyle",
    "SynthSummary",
    "generate_dataset",
    "generate_scene",
    "sample_style",
]

CLASS_NAMES = ("bolt", "nut", "washer", "screw")
# Scene options by difficulty: "easy" (large objects, no clutter or occluders) is what a student
# trained from scratch on a CPU can learn in minutes (the offline demo); "normal" is the default.
DIFFICULTY = {
    "normal": {},
    "easy": {"n_objects": (2, 6), "scale": (0.15, 0.32), "clutter": False, "occluders": False},
}
MIN_VISIBLE = 0.5
BACKGROUNDS = ("wood", "concrete", "fabric", "plate", "paper", "plain")
_MATERIALS = {  # RGB base colours of common fastener finishes
    "steel": (178, 180, 184),
    "zinc": (196, 204, 214),
    "brass": (196, 160, 78),
    "black_oxide": (58, 58, 62),
    "copper": (184, 112, 72),
}


@dataclass(frozen=True)
class SceneStyle:
    """What stays the same within one capture session (a group)."""

    background: str  # one of BACKGROUNDS
    texture_seed: int
    base_color: tuple[int, int, int]
    accent_color: tuple[int, int, int]
    gain: float  # overall exposure
    tint: tuple[float, float, float]  # white balance
    light_angle: float  # radians, direction of the brightness gradient
    light_strength: float  # 0 = flat lighting
    blur_sigma: float  # typical blur of this session (per frame jitter on top)
    noise_sigma: float  # sensor noise in 8-bit units
    frame_gain_jitter: float = 0.07  # exposure varies a little from frame to frame


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    images: int
    boxes: int
    groups: int
    per_class: dict[str, int]


def sample_style(rng: np.random.Generator, background: str | None = None) -> SceneStyle:
    background = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    palettes = {
        "wood": ((150, 105, 60), (110, 70, 35)),
        "concrete": ((135, 135, 130), (95, 95, 92)),
        "fabric": ((40, 70, 120), (25, 45, 85)),
        "plate": ((95, 100, 108), (70, 74, 80)),
        "paper": ((225, 222, 210), (160, 170, 200)),
        "plain": ((120, 160, 120), (120, 160, 120)),
    }
    base, accent = palettes[background]
    jitter = rng.integers(-25, 26, size=3)
    return SceneStyle(
        background=background,
        texture_seed=int(rng.integers(2**31)),
        base_color=tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(base, jitter)),
        accent_color=tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(accent, jitter)),
        gain=float(rng.uniform(0.7, 1.2)),
        tint=tuple(float(t) for t in rng.uniform(0.9, 1.1, size=3)),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        light_strength=float(rng.uniform(0.0, 0.45)),
        blur_sigma=float(rng.choice([0.0, 0.0, 0.6, 1.0, 1.6])),
        noise_sigma=float(rng.uniform(1.0, 6.0)),
    )


def generate_scene(
    rng: np.random.Generator,
    imgsz: int | tuple[int, int] = 320,
    *,
    style: SceneStyle | None = None,
    n_objects: tuple[int, int] = (1, 7),
    scale: tuple[float, float] = (0.07, 0.32),
    classes: tuple[int, ...] = (0, 1, 2, 3),
    clutter: bool = True,
    occluders: bool = True,
    blur: bool = True,
    noise: bool = True,
    with_masks: bool = False,
    cache: dict | None = None,
) -> tuple[np.ndarray, sv.Detections]:
    """One RGB scene and its exact boxes.

    imgsz: side, or (width, height). n_objects: [low, high) count of placed fasteners (fewer when
    the scene is too crowded to place them with MIN_VISIBLE). scale: object length as a fraction
    of the shorter image side. classes: which class ids may appear. cache: pass one dict to
    all calls (any sessions) to reuse each session's texture, light field and a noise bank; a
    large speed-up, still deterministic, but the noise pixels differ from a call without cache.
    """
    import supervision as sv

    width, height = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    style = style or sample_style(rng)
    image = _background(style, width, height, rng, cache)
    if clutter and style.background != "plain":
        _draw_clutter(image, style, rng)

    placed: list[_Patch] = []  # full drawn extent of each labeled object
    visible: list[_Patch] = []  # what is still visible of it
    class_ids: list[int] = []
    wanted = int(rng.integers(n_objects[0], n_objects[1]))
    short = min(width, height)
    for _ in range(wanted):
        cls = int(classes[int(rng.integers(len(classes)))])
        for _attempt in range(8):
            length = short * float(rng.uniform(*scale))
            center = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
            shapes, details = _fastener(cls, length, center, float(rng.uniform(0, 2 * math.pi)), rng)
            patch = _rasterize(shapes, width, height)
            if patch is None:
                continue
            area = int(patch.mask.sum())
            if area < 16 or area < MIN_VISIBLE * _shape_area(shapes):
                continue  # mostly outside the image
            if not _keeps_visible(patch, placed, visible):
                continue
            color = _material_color(image, patch, rng)
            detail = _rasterize(details, width, height, frame=patch)
            _paint(image, patch, color, rng, detail=None if detail is None else detail.mask & patch.mask)
            for v in visible:
                v.cut(patch)
            placed.append(patch)
            visible.append(_Patch(patch.x0, patch.y0, patch.mask.copy()))
            class_ids.append(cls)
            break

    if occluders and style.background != "plain" and placed and rng.random() < 0.35:
        occluder = _occluder_mask(width, height, rng)
        if occluder is not None and _keeps_visible(occluder, placed, visible):
            _paint(image, occluder, np.asarray(style.accent_color, np.float32), rng, detail=None)
            for v in visible:
                v.cut(occluder)

    image = _light(image, style, rng, cache)
    if blur:
        image = _blur(image, style, rng)
    if noise and style.noise_sigma > 0:
        image += _noise(style, width, height, rng, cache)
    rgb = np.clip(image, 0, 255).astype(np.uint8)

    det = sv.Detections(
        xyxy=np.asarray([v.box() for v in visible], dtype=np.float32).reshape(-1, 4),
        class_id=np.asarray(class_ids, dtype=int),
        mask=np.array([v.full(width, height) for v in visible], dtype=bool).reshape(-1, height, width)
        if with_masks
        else None,
    )
    return rgb, det


def generate_dataset(
    out_dir: str | Path,
    n: int = 100,
    seed: int = 0,
    imgsz: int = 320,
    groups: int = 10,
    jpeg_quality: int = 90,
    advance=None,
    **scene_options,
) -> SynthSummary:
    """Write ``n`` scenes in YOLO layout, spread round-robin-free over ``groups`` capture sessions.

    Images ``i`` belong to group ``i * groups // n`` (contiguous runs, like sessions on disk).
    The same (n, seed, imgsz, groups, options) always writes the same pixels and labels.
    """
    from PIL import Image

    from autolabel.formats import yolo

    root = Path(out_dir)
    groups = max(1, min(groups, n)) if n else 1
    rng = np.random.default_rng(seed)
    styles = [sample_style(rng) for _ in range(groups)]
    cache: dict = {}
    per_class = dict.fromkeys(CLASS_NAMES, 0)
    boxes = 0
    for index in range(n):
        group = index * groups // n
        name = f"g{group:02d}"
        scene_rng = np.random.default_rng([seed, index])
        rgb, det = generate_scene(scene_rng, imgsz, style=styles[group], cache=cache, **scene_options)
        image_path = root / "images" / name / f"{name}_{index:04d}.jpg"
        label_path = root / "labels" / name / f"{name}_{index:04d}.txt"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(image_path, quality=jpeg_quality)
        lines = yolo.to_lines(det, rgb.shape[1], rgb.shape[0])
        label_path.write_text("\n".join(lines) + ("\n" if lines else ""))
        for cid in det.class_id:
            per_class[CLASS_NAMES[int(cid)]] += 1
        boxes += len(det)
        if advance:
            advance(1)
    # No 'path' key: ultralytics then resolves images/ next to data.yaml, so the folder can move.
    (root / "data.yaml").write_text(yolo.data_yaml(list(CLASS_NAMES), "images", "images"))
    return SynthSummary(root=root, images=n, boxes=boxes, groups=groups, per_class=per_class)


# -- drawing ---------------------------------------------------------------------------------


def _background(
    style: SceneStyle, width: int, height: int, rng: np.random.Generator, cache: dict | None
) -> np.ndarray:
    """A float32 HxWx3 texture; the session's texture seed fixes it, the frame shifts it a little."""
    pad = max(width, height) // 8 + 1
    dx, dy = (int(v) for v in rng.integers(0, pad, size=2))
    base = np.asarray(style.base_color, np.float32)
    accent = np.asarray(style.accent_color, np.float32)
    if style.background == "plain":
        return np.broadcast_to(base, (height, width, 3)).copy()
    key = (style, width + pad, height + pad)
    t = cache.get(key) if cache is not None else None
    if t is None:
        t = _texture(style, width + pad, height + pad)
        if cache is not None:
            cache[key] = t
    t = t[dy : dy + height, dx : dx + width, None]
    return t * (accent - base) + base


def _texture(style: SceneStyle, big_w: int, big_h: int) -> np.ndarray:
    """The session's blend field in [0, 1] between base and accent colours."""
    tex_rng = np.random.default_rng(style.texture_seed)
    yy = np.arange(big_h, dtype=np.float32)[:, None]
    xx = np.arange(big_w, dtype=np.float32)[None, :]
    if style.background == "wood":
        warp = _smooth_noise(tex_rng, big_w, big_h, cells=4) * 18.0
        freq = tex_rng.uniform(0.08, 0.16)
        t = 0.5 + 0.5 * np.sin((yy + warp) * freq)
        t = t**2 * 0.8 + 0.2 * _smooth_noise(tex_rng, big_w, big_h, cells=40)
    elif style.background == "concrete":
        t = 0.6 * _smooth_noise(tex_rng, big_w, big_h, cells=12) + 0.4 * tex_rng.random(
            (big_h, big_w), dtype=np.float32
        )
    elif style.background == "fabric":
        period = tex_rng.uniform(3.0, 6.0)
        t = 0.5 + 0.25 * np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)
        t = t + 0.3 * _smooth_noise(tex_rng, big_w, big_h, cells=8)
    elif style.background == "plate":
        t = 0.7 * _smooth_noise(tex_rng, big_w, big_h, cells=6) + 0.3 * (
            np.sin(xx * tex_rng.uniform(0.5, 1.5)) * 0.5 + 0.5
        ) * tex_rng.random((big_h, 1))
    else:  # paper: light sheet with a printed grid
        step = int(tex_rng.integers(16, 32))
        t = 0.15 * _smooth_noise(tex_rng, big_w, big_h, cells=6)
        t = t + ((xx.astype(int) % step == 0) | (yy.astype(int) % step == 0)) * np.float32(0.9)
    return np.clip(np.broadcast_to(t, (big_h, big_w)), 0, 1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    from PIL import Image

    aspect = height / width
    small = rng.random((max(2, round(cells * aspect)), cells)).astype(np.float32)
    up = Image.fromarray(small, mode="F").resize((width, height), Image.BICUBIC)
    return np.clip(np.asarray(up), 0, 1)


def _draw_clutter(image: np.ndarray, style: SceneStyle, rng: np.random.Generator) -> None:
    """Unlabeled distractors under the objects: scratches, specks, blobs, a cable."""
    from PIL import Image, ImageDraw

    height, width = image.shape[:2]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(0, 6))):  # scratches
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.05, 0.4) * width
        draw.line(
            [(x, y), (x + math.cos(angle) * length, y + math.sin(angle) * length)],
            fill=int(rng.integers(60, 160)),
            width=int(rng.integers(1, 3)),
        )
    for _ in range(int(rng.integers(0, 12))):  # specks and pebbles
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, 0.025 * width + 2)
        draw.ellipse([x - r, y - r * rng.uniform(0.5, 1), x + r, y + r], fill=int(rng.integers(80, 200)))
    if rng.random() < 0.3:  # a cable across the frame
        points = [(0.0, rng.uniform(0, height))]
        for step in range(1, 6):
            points.append((step * width / 5, points[-1][1] + rng.uniform(-0.15, 0.15) * height))
        draw.line(points, fill=220, width=int(rng.integers(3, max(4, width // 40))), joint="curve")
    alpha = np.asarray(layer, np.float32)[..., None] / 255.0
    dark = np.asarray(style.accent_color, np.float32) * 0.45
    image *= 1 - alpha
    image += alpha * dark


def _regular_polygon(sides: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.arange(sides) * 2 * math.pi / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius


def _fastener(cls: int, length: float, center, angle: float, rng: np.random.Generator):
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
class _Patch:
    """A bool mask of the pixels [y0, y0 + h) x [x0, x0 + w) of the image: objects stay small."""

    x0: int
    y0: int
    mask: np.ndarray

    def window(self, other: _Patch) -> tuple[slice, slice, slice, slice] | None:
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

    def overlap(self, other: _Patch) -> int:
        win = self.window(other)
        if win is None:
            return 0
        return int((self.mask[win[0], win[1]] & other.mask[win[2], win[3]]).sum())

    def cut(self, other: _Patch) -> None:
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


def _rasterize(
    polygons: list[tuple[np.ndarray, int]], width: int, height: int, frame: _Patch | None = None
) -> _Patch | None:
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
    return _Patch(x0, y0, np.asarray(canvas) > 0)


def _shape_area(polygons: list[tuple[np.ndarray, int]]) -> float:
    """Area of the filled outlines (holes ignored: this only bounds how much fell off the image)."""
    total = 0.0
    for points, fill in polygons:
        if fill:
            x, y = points[:, 0], points[:, 1]
            total += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return total


def _keeps_visible(new: _Patch, placed: list[_Patch], visible: list[_Patch]) -> bool:
    """Would every placed object keep MIN_VISIBLE of its own area once ``new`` is drawn on top?"""
    for full, seen in zip(placed, visible):
        if seen.overlap(new) and seen.mask.sum() - seen.overlap(new) < MIN_VISIBLE * full.mask.sum():
            return False
    return True


def _material_color(image: np.ndarray, patch: _Patch, rng: np.random.Generator) -> np.ndarray:
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


def _paint(image: np.ndarray, patch: _Patch, color, rng: np.random.Generator, detail) -> None:
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


def _occluder_mask(width: int, height: int, rng: np.random.Generator) -> _Patch | None:
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
    return _rasterize([(np.asarray(points, dtype=np.float64), 1)], width, height)


def _light(image: np.ndarray, style: SceneStyle, rng: np.random.Generator, cache: dict | None) -> np.ndarray:
    """Exposure, white balance and a directional light gradient (the field is the session's)."""
    height, width = image.shape[:2]
    key = ("light", style, width, height)
    field = cache.get(key) if cache is not None else None
    if field is None:
        ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
        xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
        gradient = xs * math.cos(style.light_angle) + ys * math.sin(style.light_angle)
        field = (style.gain * (1 + style.light_strength * 0.5 * gradient))[..., None] * np.asarray(
            style.tint, np.float32
        )
        if cache is not None:
            cache[key] = field
    jitter = style.frame_gain_jitter
    image *= field
    if jitter:
        image *= np.float32(rng.uniform(1 - jitter, 1 + jitter))
    return image


def _noise(
    style: SceneStyle, width: int, height: int, rng: np.random.Generator, cache: dict | None
) -> np.ndarray:
    """Sensor noise; with a cache, a random window of a per-session noise bank (much cheaper)."""
    if cache is None:
        return rng.standard_normal(size=(height, width, 3), dtype=np.float32) * np.float32(style.noise_sigma)
    key = ("noise", style, width, height)
    bank = cache.get(key)
    if bank is None:
        bank_rng = np.random.default_rng(style.texture_seed + 1)
        bank = bank_rng.standard_normal(size=(2 * height, 2 * width, 3), dtype=np.float32)
        bank *= np.float32(style.noise_sigma)
        cache[key] = bank
    dy, dx = int(rng.integers(height)), int(rng.integers(width))
    return bank[dy : dy + height, dx : dx + width]


def _blur(image: np.ndarray, style: SceneStyle, rng: np.random.Generator) -> np.ndarray:
    import cv2

    sigma = max(0.0, style.blur_sigma + float(rng.uniform(-0.3, 0.3)))
    if sigma < 0.3:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
