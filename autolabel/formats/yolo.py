"""YOLO datasets: the one reader and writer of label files, class names and folder layout.

Label files hold one ``class cx cy w h`` line per box, normalized to [0, 1] (optionally a trailing
score). Class names come from ``data.yaml`` (``names`` list or mapping with ids 0..n-1), else
``dataset.yaml``, else ``classes.txt``. A dataset folder is ``images/<name>`` (links to the
originals), ``labels/<name>.txt`` (ultralytics finds labels by swapping ``images`` for ``labels``)
and ``data.yaml``.

The conversions (``to_lines``, ``from_lines``, ``names_from_yaml``, ``data_yaml``, the path rules)
are pure; the ``read_*`` / ``write_*`` / ``link_image`` functions are the thin file shell.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from autolabel import detections as dets
from autolabel.errors import AutolabelError, read_text

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.detections import LabeledImage

__all__ = [
    "NAMES_FILES",
    "YoloFormatError",
    "data_yaml",
    "dataset_file_name",
    "from_lines",
    "label_text",
    "link_image",
    "mirrored_paths",
    "names_from_lines",
    "names_from_yaml",
    "read_class_names",
    "read_label_file",
    "to_lines",
    "write_data_yaml",
    "write_images",
    "write_label_file",
]

NAMES_FILES = ("data.yaml", "dataset.yaml")


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


def label_text(det: sv.Detections, width: int, height: int, with_scores: bool = False) -> str:
    """A label file's content: one line per box, each ending in a newline (empty: no objects)."""
    return "".join(line + "\n" for line in to_lines(det, width, height, with_scores=with_scores))


def data_yaml(names: list[str], train: str, val: str, path: str | None = None) -> str:
    import yaml

    data: dict = {}
    if path is not None:
        data["path"] = path
    data.update({"train": train, "val": val, "nc": len(names), "names": dict(enumerate(names))})
    return yaml.safe_dump(data, sort_keys=False)


def names_from_yaml(data: object, where: str) -> list[str]:
    """Class names of a parsed data.yaml: a ``names`` list, or a mapping whose ids are 0..n-1."""
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise YoloFormatError(
                f"{where}: names must have integer ids, got {sorted(map(str, names))}"
            ) from None
        if ids != list(range(len(ids))):
            raise YoloFormatError(f"{where}: names must have ids 0..n-1, got {ids}")
        return [str(names[k]) if k in names else str(names[str(k)]) for k in ids]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise YoloFormatError(f"{where}: no 'names' list or mapping")


def names_from_lines(lines: Iterable[str]) -> list[str]:
    """classes.txt: one name per line, blank lines ignored."""
    return [line.strip() for line in lines if line.strip()]


def dataset_file_name(image_id: int, rel_path: str) -> str:
    """Unique and stable per image: two 'img_001.jpg' in different folders must not collide."""
    path = Path(rel_path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:80]
    return f"{image_id:06d}_{stem}{path.suffix.lower()}"


def mirrored_paths(relative_paths: Sequence[str]) -> list[tuple[PurePosixPath, PurePosixPath]]:
    """(image path, label path) inside a dataset for each image's path relative to the image root.

    The folder structure is kept; two images whose names differ only in suffix ('a.jpg', 'a.png')
    would share a label file, so the later one gets its suffix folded into the stem.
    """
    out, taken = [], set()
    for rel in relative_paths:
        path = PurePosixPath(rel)
        label = path.with_suffix(".txt")
        if label.as_posix().lower() in taken:
            path = path.with_name(f"{path.stem}_{path.suffix.lstrip('.')}{path.suffix}")
            label = path.with_suffix(".txt")
        taken.add(label.as_posix().lower())
        out.append((PurePosixPath("images") / path, PurePosixPath("labels") / label))
    return out


# -- files -------------------------------------------------------------------------------------


def read_class_names(folder: Path, levels: int = 1) -> list[str] | None:
    """Class names from ``folder`` or up to ``levels - 1`` folders above it (``root/data.yaml``
    with ``root/labels/train/*.txt`` is the ultralytics layout); None where there are none."""
    import yaml

    candidates = [Path(folder)]
    while len(candidates) < levels:
        candidates.append(candidates[-1].parent)
    for candidate in candidates:
        for file_name in NAMES_FILES:
            path = candidate / file_name
            if not path.is_file():
                continue
            try:
                data = yaml.safe_load(read_text(path, file_name))
            except yaml.YAMLError as exc:
                raise AutolabelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
            try:
                return names_from_yaml(data, str(path))
            except YoloFormatError as exc:
                raise AutolabelError(str(exc)) from None
        classes_txt = candidate / "classes.txt"
        if classes_txt.is_file():
            return names_from_lines(read_text(classes_txt, "classes.txt").splitlines())
    return None


def read_label_file(path: Path, width: int, height: int) -> sv.Detections:
    """A label file's boxes in pixels; a malformed line raises YoloFormatError."""
    return from_lines(read_text(path, "YOLO label file").splitlines(), width, height)


def write_label_file(
    path: Path, det: sv.Detections, width: int, height: int, with_scores: bool = False
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(label_text(det, width, height, with_scores=with_scores))


def write_data_yaml(out_dir: Path, names: list[str], train: str, val: str, path: str | None = None) -> Path:
    """``out_dir/data.yaml``; without ``path`` ultralytics resolves train/val next to the file."""
    target = Path(out_dir) / "data.yaml"
    target.write_text(data_yaml(names, train=train, val=val, path=path))
    return target


def link_image(source: Path, target: Path) -> None:
    """``target`` becomes a link to ``source`` (a copy where links are impossible), replacing one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.symlink(source, target)
    except OSError:  # file systems without symlinks (some Windows setups)
        shutil.copy2(source, target)


def write_images(
    out_dir: Path,
    image_root: Path,
    entries: Iterable[tuple[PurePosixPath | str, LabeledImage]],
    with_scores: bool = False,
) -> None:
    """For each (name, image): ``images/<name>`` linked to the original below ``image_root`` and
    ``labels/<name>.txt`` with its boxes."""
    out_dir = Path(out_dir)
    for name, image in entries:
        link_image((Path(image_root) / image.path).resolve(), out_dir / "images" / name)
        label = (out_dir / "labels" / name).with_suffix(".txt")
        write_label_file(label, image.detections, image.width, image.height, with_scores=with_scores)
