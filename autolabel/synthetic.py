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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.synthetic_scene import SceneStyle, generate_scene, sample_style
from autolabel.synthetic_shapes import MIN_VISIBLE

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


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    images: int
    boxes: int
    groups: int
    per_class: dict[str, int]


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
        Image.fromarray(rgb).save(image_path, quality=jpeg_quality)
        yolo.write_label_file(label_path, det, rgb.shape[1], rgb.shape[0])
        for cid in det.class_id:
            per_class[CLASS_NAMES[int(cid)]] += 1
        boxes += len(det)
        if advance:
            advance(1)
    # No 'path' key: ultralytics then resolves images/ next to data.yaml, so the folder can move.
    yolo.write_data_yaml(root, list(CLASS_NAMES), "images", "images")
    return SynthSummary(root=root, images=n, boxes=boxes, groups=groups, per_class=per_class)
