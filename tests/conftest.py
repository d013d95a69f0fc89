"""Test hygiene: offline, nothing written to $HOME, caches in a per-session temp dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_CACHE = Path(tempfile.mkdtemp(prefix="autolabel-test-cache-"))
# Set before any test module imports ultralytics/transformers/matplotlib.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "false"
os.environ.setdefault("HF_HOME", str(_CACHE / "hf"))
os.environ.setdefault("YOLO_CONFIG_DIR", str(_CACHE / "ultralytics"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "matplotlib"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("XDG_CONFIG_HOME", str(_CACHE / "xdg-config"))
os.environ.setdefault("XDG_CACHE_HOME", str(_CACHE / "xdg-cache"))
os.environ.setdefault("TORCH_HOME", str(_CACHE / "torch"))


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return _CACHE
