"""Pictures people would rather look at than read: a grid of images with their boxes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import supervision as sv


def annotate(image: np.ndarray, det: sv.Detections, class_names: Sequence[str]) -> np.ndarray:
    """Draw boxes with 'class score' labels on a copy of an RGB image."""
    import supervision as sv

    canvas = image.copy()
    if len(det) == 0:
        return canvas
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    text_scale = max(0.35, max(canvas.shape[:2]) / 1400)
    labels = []
    for i in range(len(det)):
        cid = int(det.class_id[i])
        name = class_names[cid] if 0 <= cid < len(class_names) else f"?{cid}"
        score = "" if det.confidence is None else f" {float(det.confidence[i]):.2f}"
        labels.append(f"{name}{score}")
    palette = sv.ColorPalette.DEFAULT
    canvas = sv.BoxAnnotator(color=palette, thickness=thickness).annotate(canvas, det)
    canvas = sv.LabelAnnotator(
        color=palette, text_scale=text_scale, text_thickness=thickness, text_padding=2
    ).annotate(canvas, det, labels=labels)
    return canvas


def render_grid(
    tiles: Sequence[tuple[np.ndarray, sv.Detections]],
    class_names: Sequence[str],
    out_path: str | Path,
    titles: Sequence[str] | None = None,
    columns: int | None = None,
    tile_size: int = 320,
) -> Path:
    """Write a PNG grid of annotated images (RGB arrays) and return its path."""
    from PIL import Image, ImageDraw

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    count = max(1, len(tiles))
    columns = columns or min(count, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    title_height = 16 if titles else 0
    sheet = Image.new("RGB", (columns * tile_size, rows * (tile_size + title_height)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for index, (image, det) in enumerate(tiles):
        tile = Image.fromarray(annotate(image, det, class_names))
        tile.thumbnail((tile_size, tile_size))
        x = (index % columns) * tile_size
        y = (index // columns) * (tile_size + title_height)
        sheet.paste(
            tile, (x + (tile_size - tile.width) // 2, y + title_height + (tile_size - tile.height) // 2)
        )
        if titles:
            draw.text((x + 4, y + 2), str(titles[index])[:48], fill=(230, 230, 230))
    sheet.save(out_path)
    return out_path


@dataclass(frozen=True)
class PreviewSummary:
    path: Path
    shown: int
    unreadable: list[tuple[str, str]]  # (relative path, why it could not be decoded)


def write_preview(
    image_root: Path,
    items: Sequence[tuple[str, sv.Detections]],
    class_names: Sequence[str],
    out_path: str | Path,
    tile_size: int = 320,
) -> PreviewSummary:
    """Decode each (path relative to ``image_root``, boxes) and write their grid, titled by path;
    files that cannot be decoded are listed in the summary instead of drawn."""
    from autolabel.images import ImageDecodeError, decode

    tiles, titles, unreadable = [], [], []
    for rel, det in items:
        try:
            pixels = decode(Path(image_root) / rel).pixels
        except ImageDecodeError as exc:
            unreadable.append((rel, str(exc)))
            continue
        tiles.append((pixels, det))
        titles.append(rel)
    if not tiles:
        return PreviewSummary(path=Path(out_path), shown=0, unreadable=unreadable)
    path = render_grid(tiles, class_names, out_path, titles=titles, tile_size=tile_size)
    return PreviewSummary(path=Path(path), shown=len(tiles), unreadable=unreadable)
