"""Builders for test data: image files of every kind a user's folder may hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def rgb(path: Path, width: int = 96, height: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def bad_corpus(root: Path) -> dict[str, str]:
    """Write one file of each problematic kind; returns file name -> expected outcome keyword."""
    root.mkdir(parents=True, exist_ok=True)
    rgb(root / "good.jpg")
    Image.new("CMYK", (40, 30), (10, 20, 30, 40)).save(root / "cmyk.jpg")
    gray16 = (np.linspace(0, 65535, 30 * 40).reshape(30, 40)).astype(np.uint16)
    Image.fromarray(gray16).save(root / "gray16.png")
    Image.new("L", (40, 30), 128).save(root / "gray8.png")
    rotated = Image.new("RGB", (60, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    rotated.save(root / "rotated.jpg", exif=exif)
    (root / "zero.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    data = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("1", (9500, 9500)).save(root / "bomb.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(root / "pixel.png")
    return {
        "good.jpg": "ok",
        "cmyk.jpg": "CMYK",
        "gray16.png": "16-bit",
        "gray8.png": "grayscale",
        "rotated.jpg": "EXIF orientation",
        "zero.png": "empty file",
        "notes.jpg": "not an image",
        "truncated.jpg": "truncated",
        "bomb.png": "decompression bomb",
        "pixel.png": "too small",
    }
