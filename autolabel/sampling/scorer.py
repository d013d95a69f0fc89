"""Pool scoring: the student's predictions, uncertainty scores and embedding for unlabeled images.

``PoolScorer`` loads the student once (``autolabel.students.load``) and maps rows of
``{id, path}`` to rows of ``{id, scores, embedding, detections, error}``, decoding inside (a bad
file becomes an error row): the row contract of ``autolabel.proposers.base.BatchMapper``, so the
local streaming ``score_pool`` and a Ray Data engine (``map_batches`` with the class, one actor
per GPU) share it.

* ``detections``: the student's boxes at a low confidence threshold (``conf``, default 0.05, so
  doubtful boxes are there to be scored), as ``autolabel.detections.to_dict``.
* ``scores``: ``autolabel.sampling.uncertainty.image_scores`` over those boxes, using each kept
  box's per-class scores (``Student.score``) for margin and entropy, and, with ``flip``,
  ``instability`` against a second pass on the horizontally flipped image.
* ``embedding``: the student's pooled, L2-normalized backbone features from the same pass (a
  256-d vector for yolo11n, see ``autolabel.students.yolo``). ``None`` when the weights have no
  backbone to pool (exported formats).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel import detections as dets
from autolabel.images import ImageDecodeError, decode
from autolabel.sampling import uncertainty

if TYPE_CHECKING:
    from autolabel.students.base import ScoredImage

ROW_KEYS = ("id", "scores", "embedding", "detections", "error")


@dataclass(frozen=True, kw_only=True)
class ScorerSettings:
    imgsz: int = 640
    conf: float = 0.05
    iou: float = 0.6
    max_det: int = 100
    device: str = "auto"
    flip: bool = True  # second pass on the mirrored image for the localization-stability score
    embed: bool = True


class PoolScorer:
    """Loads the student once; then scores batches of images (rows in, rows out)."""

    def __init__(self, weights: str | Path, settings: ScorerSettings = ScorerSettings()):
        from autolabel import students
        from autolabel.runtime import resolve_device

        self.settings = settings
        self.student = students.load(weights)
        self.device = resolve_device(settings.device)
        self.model_version = f"student:{Path(str(weights)).name}"
        self._embed = settings.embed and self.student.can_embed

    @property
    def embeds(self) -> bool:
        return self._embed

    def score_images(self, images: Sequence[np.ndarray]) -> list[dict]:
        """RGB uint8 arrays -> ``{scores, embedding, detections}`` per image (no id, no error)."""
        if not images:
            return []
        scored = self._score(images, embed=self._embed)
        flipped = self._score([im[:, ::-1] for im in images], embed=False) if self.settings.flip else None
        out = []
        for i, (image, result) in enumerate(zip(images, scored)):
            det = result.detections
            width = int(image.shape[1])
            mirrored = flipped[i].detections if flipped is not None else None
            out.append(
                {
                    "scores": uncertainty.image_scores(det, mirrored, width),
                    "embedding": result.embedding.tolist() if result.embedding is not None else None,
                    "detections": dets.to_dict(det),
                }
            )
        return out

    def map_rows(self, rows: Sequence[dict]) -> list[dict]:
        out: dict[Any, dict] = {}
        good_rows, images = [], []
        for row in rows:
            try:
                images.append(decode(row["path"]).pixels)
                good_rows.append(row)
            except ImageDecodeError as exc:
                out[row["id"]] = _error_row(row["id"], str(exc))
            except Exception as exc:  # e.g. ultralytics' Image.open patch failing on an unknown format  # noqa: BLE001
                out[row["id"]] = _error_row(row["id"], f"not an image ({type(exc).__name__}: {exc})")
        self._score_decoded(good_rows, images, out)
        return [out[row["id"]] for row in rows]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        """Ray Data's column batches: {"id": [...], "path": [...]} -> columns of ``ROW_KEYS``."""
        rows = [{"id": i, "path": p} for i, p in zip(list(batch["id"]), list(batch["path"]))]
        mapped = self.map_rows(rows)
        return {key: [r[key] for r in mapped] for key in ROW_KEYS}

    def _score_decoded(self, rows: Sequence[dict], images: Sequence[np.ndarray], out: dict) -> None:
        try:
            for row, result in zip(rows, self.score_images(images)):
                out[row["id"]] = {"id": row["id"], **result, "error": None}
        except Exception as exc:  # one failing batch is retried image by image, the run goes on  # noqa: BLE001
            if len(images) > 1:
                for row, image in zip(rows, images):
                    self._score_decoded([row], [image], out)
            else:
                for row in rows:
                    out[row["id"]] = _error_row(row["id"], f"model failed: {exc}")

    def _score(self, images: Sequence[np.ndarray], *, embed: bool) -> list[ScoredImage]:
        s = self.settings
        return self.student.score(
            images, conf=s.conf, iou=s.iou, imgsz=s.imgsz, max_det=s.max_det, device=self.device, embed=embed
        )


def score_pool(
    scorer: PoolScorer,
    rows: Iterable[dict],
    batch_size: int = 8,
    advance: Callable[[int], None] | None = None,
) -> Iterator[dict]:
    """Stream rows of ``{id, path}`` through an already loaded scorer in this process, yielding
    result rows in order (``engines.base.LocalEngine`` with this scorer as its mapper).

    ``advance(n)`` is called after each batch (e.g. ``autolabel.progress.progress_bar``'s).
    """
    from autolabel.engines.base import LocalEngine

    return LocalEngine().map(lambda: scorer, [rows], batch_size=batch_size, advance=advance)


def _error_row(image_id, error: str) -> dict:
    return {"id": image_id, "scores": None, "embedding": None, "detections": None, "error": error}
