"""Image discovery, hashing, EXIF-correct decoding and source groups.

Decoding never raises anything but ``ImageDecodeError`` whose message is the recorded reason,
so one bad file becomes one line in a summary, not a crash.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

import numpy as np

from autolabel.errors import AutolabelError, first_line

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit
# Smaller than this on a side: nothing to detect, and the detectors' patch/stride arithmetic fails
# on it (a 1x1 image broke Grounding DINO's feature maps). Refused at registration with the reason.
MIN_SIDE = 8
_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132


class ImageDecodeError(Exception):
    """The file cannot be used as an image; the message is the reason recorded in the store."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # HxWx3 uint8 RGB, EXIF orientation applied
    note: str | None  # a conversion made on the way (grayscale, CMYK, 16-bit, rotation)
    captured_at: str | None

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def discover(root: Path) -> list[Path]:
    """Image files below ``root`` (hidden folders skipped), sorted for a stable order."""
    if not root.exists():
        raise AutolabelError(f"images folder not found: {root}")
    if not root.is_dir():
        raise AutolabelError(f"not a folder: {root}")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def decode(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read an image as RGB uint8 with EXIF orientation applied, or raise ImageDecodeError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"decompression bomb: {width}x{height} pixels is over the limit of {max_pixels}"
                    )
                if min(width, height) < MIN_SIDE:
                    raise ImageDecodeError(f"too small: {width}x{height} pixels (at least {MIN_SIDE} a side)")
                img.load()
                exif = img.getexif()
                orientation = exif.get(_EXIF_ORIENTATION, 1)
                captured_at = _capture_time(exif)
                if orientation not in (1, None):
                    img = ImageOps.exif_transpose(img)
                    notes.append(f"EXIF orientation {orientation} applied")
                rgb = _to_rgb(img, notes)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, ImportError):
        # Once ultralytics is imported, Image.open retries unidentified files through pi_heif,
        # whose import fails when it is not installed: still just "not an image".
        raise ImageDecodeError("not an image (unrecognized format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"truncated or corrupt image data ({first_line(exc)})") from None
    return DecodedImage(pixels=rgb, note="; ".join(notes) or None, captured_at=captured_at)


def _to_rgb(img, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        array = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append(f"{16 if peak > 255 else 8}-bit grayscale ({mode}) scaled to 8-bit RGB")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        array = np.asarray(img, dtype=np.float64)
        span = max(array.max(initial=0) - array.min(initial=0), 1e-12)
        gray = ((array - array.min(initial=0)) / span * 255).astype(np.uint8)
        notes.append("float image scaled to 8-bit RGB")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode == "CMYK":
        notes.append("converted from CMYK")
    elif mode in ("L", "LA", "1"):
        notes.append("grayscale converted to RGB")
    elif mode in ("RGBA", "PA", "P") and ("A" in mode or "transparency" in img.info):
        notes.append("alpha channel dropped")
    elif mode not in ("P", "YCbCr"):
        notes.append(f"converted from {mode}")
    if mode == "RGBA" or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        # Composite on white: transparent regions would otherwise show their hidden colour.
        from PIL import Image

        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _capture_time(exif) -> str | None:
    raw = None
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL)
    except Exception:  # malformed EXIF block: no capture time, not a decode failure  # noqa: BLE001
        raw = None
    raw = raw or exif.get(_EXIF_DATETIME)
    if not raw:
        return None
    try:
        return datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


# -- source groups -----------------------------------------------------------------------------


def folder_group(rel_path: str) -> str:
    parent = str(PurePosixPath(rel_path).parent)
    return parent if parent != "." else "(root)"


def regex_group(rel_path: str, pattern: re.Pattern[str]) -> str:
    """The first capture group (or the whole match) names the group; no match: its own group."""
    match = pattern.search(rel_path)
    if not match:
        return rel_path
    return match.group(1) if match.groups() and match.group(1) is not None else match.group(0)


def time_gap_groups(items: Iterable[tuple[str, str | None]], gap_seconds: float) -> dict[str, str]:
    """Group (rel_path, captured_at ISO) items per folder into capture sessions.

    Within a folder, images sorted by capture time start a new session wherever consecutive
    times are more than ``gap_seconds`` apart; images without a time form their own group.
    """
    by_folder: dict[str, list[tuple[datetime, str]]] = {}
    groups: dict[str, str] = {}
    for rel_path, captured_at in items:
        if not captured_at:
            groups[rel_path] = rel_path
            continue
        by_folder.setdefault(folder_group(rel_path), []).append(
            (datetime.fromisoformat(captured_at), rel_path)
        )
    for folder, entries in by_folder.items():
        entries.sort()
        session_start = None
        previous = None
        for moment, rel_path in entries:
            if previous is None or (moment - previous).total_seconds() > gap_seconds:
                session_start = moment
            previous = moment
            groups[rel_path] = f"{folder}@{session_start.isoformat()}"
    return groups


# -- automatic grouping (grouping.mode: auto) --------------------------------------------------

DEFAULT_GAP_SECONDS = 600.0  # when the capture times show no clear break between sessions
_MIN_GAP_SECONDS = 30.0
_MAX_GAP_SECONDS = 86_400.0
_CLEAR_BREAK = 4.0  # a session break is a jump of at least this factor in the sorted gaps
# 'clip12_000345' -> 'clip12': a name, an optional separator, then the frame number
_FRAME_NAME = re.compile(r"^(.+?)[_\-. ]?(\d+)$")


@dataclass(frozen=True)
class Grouping:
    """The groups a rule made: ``rule`` names it for people, ``detail`` says how it was tuned."""

    rule: str
    groups: dict[str, str]  # rel_path -> group name
    detail: str = ""

    def describe(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"grouping: {self.rule}{detail}: {len(set(self.groups.values()))} groups"


def choose_gap(times: Iterable[datetime]) -> float | None:
    """The session gap the capture times suggest, in seconds, or None without a clear break.

    Consecutive gaps sorted: the largest jump (at least ``_CLEAR_BREAK`` times) separates gaps
    inside a session from gaps between sessions; the gap is their geometric mean.
    """
    ordered = sorted(times)
    gaps = sorted(max(1.0, (b - a).total_seconds()) for a, b in itertools.pairwise(ordered))
    best, best_ratio = None, _CLEAR_BREAK
    for lo, hi in itertools.pairwise(gaps):
        if hi / lo >= best_ratio and hi > lo:
            best, best_ratio = (lo * hi) ** 0.5, hi / lo
    if best is None:
        return None
    return min(max(best, _MIN_GAP_SECONDS), _MAX_GAP_SECONDS)


def frame_sequence_groups(rel_paths: Iterable[str]) -> dict[str, str] | None:
    """Group frames by the sequence name in their file names, or None when names show none.

    Recognised when at least two sequences of two or more frames hold most of the images (one
    sequence is a camera's counter, 'IMG_0001', not a clip); other images are their own group.
    """
    paths = list(rel_paths)
    sequence: dict[str, str] = {}
    for rel in paths:
        path = PurePosixPath(rel)
        match = _FRAME_NAME.match(path.stem)
        if match:
            sequence[rel] = str(path.parent / match.group(1)) if str(path.parent) != "." else match.group(1)
    sizes: dict[str, int] = {}
    for name in sequence.values():
        sizes[name] = sizes.get(name, 0) + 1
    clips = {name for name, size in sizes.items() if size >= 2}
    covered = sum(sizes[name] for name in clips)
    if len(clips) < 2 or covered * 2 <= len(paths):
        return None
    return {rel: sequence[rel] if sequence.get(rel) in clips else rel for rel in paths}


def auto_grouping(items: Iterable[tuple[str, str | None]]) -> Grouping:
    """The first rule that fits the folder: subfolders, capture-time sessions, frame sequences
    from file names, else one group per image (near-duplicates still join at split time)."""
    items = list(items)
    paths = [rel for rel, _ in items]
    if any(folder_group(rel) != "(root)" for rel in paths):
        return Grouping("subfolders", {rel: folder_group(rel) for rel in paths})
    times = [datetime.fromisoformat(t) for _, t in items if t]
    if times and len(times) * 2 > len(items):
        gap = choose_gap(times)
        detail = (
            f"gap {format_seconds(gap)} chosen from the data"
            if gap is not None
            else f"gap {format_seconds(DEFAULT_GAP_SECONDS)}, the default: no clear break in the times"
        )
        groups = time_gap_groups(items, DEFAULT_GAP_SECONDS if gap is None else gap)
        return Grouping("EXIF capture-time sessions", groups, detail)
    sequences = frame_sequence_groups(paths)
    if sequences is not None:
        return Grouping("frame sequences from file names", sequences)
    return Grouping("one group per image", {rel: rel for rel in paths}, "near-duplicates join at split")


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
