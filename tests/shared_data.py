"""The team's shared weights and datasets (``../shared`` beside the clone).

A test that needs them calls ``require(path)``: in a user's clone without ``../shared`` it skips
with one line saying so; CI sets ``AUTOLABEL_REQUIRE_SHARED=1`` so that a missing folder fails the
run instead of quietly skipping the tests that measure the fine-tuning regime.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
COCO_YOLO11N = SHARED / "weights" / "yolo11n-coco.pt"  # AGPL-3.0, tests and benchmarks only
BCCD = SHARED / "datasets" / "bccd"


def require(*paths: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if not missing:
        return
    message = f"{missing[0]} is missing (a clone without ../shared)"
    if os.environ.get("AUTOLABEL_REQUIRE_SHARED") == "1":
        pytest.fail(message + "; CI requires it (AUTOLABEL_REQUIRE_SHARED=1)", pytrace=False)
    pytest.skip(message)
