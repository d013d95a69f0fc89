"""Row types of the ``studio_corrections`` table (``studio.state`` owns the table and its SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

__all__ = ["CorrectionRecord", "RoundSummary"]


@dataclass(frozen=True, kw_only=True)
class CorrectionRecord:
    """One row of ``studio_corrections`` (the columns after ``project``, in table order)."""

    image_id: int
    task_id: int
    annotation_id: int
    round: int
    shown: int
    human: int
    kept: int
    moved: int
    relabeled: int
    deleted: int
    added: int
    true_positives: int
    clipped: int
    rotated: int
    seconds: float


class RoundSummary(TypedDict):
    round: int
    images: int
    empty: int
    boxes_shown: int
    boxes_human: int
    kept: int
    moved: int
    relabeled: int
    deleted: int
    added: int
    precision: float | None
    recall: float | None
    seconds: float
    seconds_from_scratch: float
    seconds_per_image: float | None
