"""Synthetic scene rendering: a capture session's look (``SceneStyle``) and one scene with its boxes.

See ``autolabel.synthetic`` for the box definition and the API; this module draws the backgrounds,
clutter, lighting, blur and noise, and places the objects of ``autolabel.synthetic_shapes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autolabel.synthetic_shapes import (
    MIN_VISIBLE,
    Patch,
    fastener,
    keeps_visible,
    material_color,
    occluder_mask,
    paint,
    rasterize,
    shape_area,
)

if TYPE_CHECKING:
    import supervision as sv

BACKGROUNDS = ("wood", "concrete", "fabric", "plate", "paper", "plain")


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

    placed: list[Patch] = []  # full drawn extent of each labeled object
    visible: list[Patch] = []  # what is still visible of it
    class_ids: list[int] = []
    wanted = int(rng.integers(n_objects[0], n_objects[1]))
    short = min(width, height)
    for _ in range(wanted):
        cls = int(classes[int(rng.integers(len(classes)))])
        for _attempt in range(8):
            length = short * float(rng.uniform(*scale))
            center = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
            shapes, details = fastener(cls, length, center, float(rng.uniform(0, 2 * math.pi)), rng)
            patch = rasterize(shapes, width, height)
            if patch is None:
                continue
            area = int(patch.mask.sum())
            if area < 16 or area < MIN_VISIBLE * shape_area(shapes):
                continue  # mostly outside the image
            if not keeps_visible(patch, placed, visible):
                continue
            color = material_color(image, patch, rng)
            detail = rasterize(details, width, height, frame=patch)
            paint(image, patch, color, rng, detail=None if detail is None else detail.mask & patch.mask)
            for v in visible:
                v.cut(patch)
            placed.append(patch)
            visible.append(Patch(patch.x0, patch.y0, patch.mask.copy()))
            class_ids.append(cls)
            break

    if occluders and style.background != "plain" and placed and rng.random() < 0.35:
        occluder = occluder_mask(width, height, rng)
        if occluder is not None and keeps_visible(occluder, placed, visible):
            paint(image, occluder, np.asarray(style.accent_color, np.float32), rng, detail=None)
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
