"""Pool scoring: the student's predictions, uncertainty scores and embedding for unlabeled images.

``PoolScorer`` loads an Ultralytics YOLO student once and maps rows of ``{id, path}`` to rows of
``{id, scores, embedding, detections, error}``, decoding inside (a bad file becomes an error
row): the row contract of ``autolabel.proposers.base.BatchMapper``, so the local streaming
``score_pool`` and a Ray Data engine (``map_batches`` with the class, one actor per GPU) share it.

* ``detections``: the student's boxes at a low confidence threshold (``conf``, default 0.05, so
  doubtful boxes are there to be scored), as ``autolabel.detections.to_dict``.
* ``scores``: ``autolabel.sampling.uncertainty.image_scores`` over those boxes, using each kept
  box's per-class scores (YOLO's sigmoid outputs, taken from the raw head output at the indices
  NMS kept) for margin and entropy, and, with ``flip``, ``instability`` against a second pass on
  the horizontally flipped image.
* ``embedding``: the output of the last backbone layer (C2PSA in YOLO11, SPPF in YOLOv8; found
  as ``len(yaml["backbone"]) - 1``, captured by a forward hook during the same prediction pass),
  global-average-pooled over space and L2-normalized: a 256-d vector for yolo11n. ``None`` when
  the weights have no such layer (exported formats).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autolabel import detections as dets
from autolabel.images import ImageDecodeError, decode
from autolabel.sampling import uncertainty

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
        from ultralytics import YOLO

        from autolabel.runtime import configure_ultralytics, resolve_device

        configure_ultralytics()
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.model = YOLO(str(weights), task="detect")
        self.model_version = f"student:{Path(str(weights)).name}"
        self._predictor = _scoring_predictor()
        self._features: list[Any] = []
        self._hook = self._attach_embedding_hook() if settings.embed else None

    @property
    def embeds(self) -> bool:
        return self._hook is not None

    def score_images(self, images: Sequence[np.ndarray]) -> list[dict]:
        """RGB uint8 arrays -> ``{scores, embedding, detections}`` per image (no id, no error)."""
        if not images:
            return []
        self._features.clear()
        results = self._predict(images)
        embeddings = self._pooled_features(len(images))
        flipped = self._predict([im[:, ::-1] for im in images]) if self.settings.flip else None
        out = []
        for i, (image, result) in enumerate(zip(images, results)):
            det = _to_detections(result)
            width = int(image.shape[1])
            mirrored = _to_detections(flipped[i]) if flipped is not None else None
            out.append(
                {
                    "scores": uncertainty.image_scores(det, mirrored, width),
                    "embedding": embeddings[i].tolist() if embeddings is not None else None,
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

    def _predict(self, images: Sequence[np.ndarray]) -> list:
        s = self.settings
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]  # ultralytics reads arrays as BGR
        return self.model.predict(
            bgr,
            imgsz=s.imgsz,
            conf=s.conf,
            iou=s.iou,
            max_det=s.max_det,
            device=self.device,
            batch=len(bgr),
            verbose=False,
            predictor=self._predictor,
        )

    def _attach_embedding_hook(self):
        net = getattr(self.model, "model", None)
        yaml = getattr(net, "yaml", None)
        layers = getattr(net, "model", None)
        if not isinstance(yaml, dict) or "backbone" not in yaml or layers is None:
            return None
        layer = layers[len(yaml["backbone"]) - 1]
        return layer.register_forward_hook(lambda _module, _inputs, output: self._features.append(output))

    def _pooled_features(self, count: int) -> np.ndarray | None:
        """The first forward pass(es) since ``score_images`` started, pooled and L2-normalized."""
        if self._hook is None or not self._features:
            return None
        import torch

        pooled = torch.cat([f.float().mean(dim=(2, 3)) for f in self._features], dim=0)[-count:]
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled.detach().cpu().numpy().astype(np.float32)


def score_pool(
    scorer: PoolScorer,
    rows: Iterable[dict],
    batch_size: int = 8,
    advance: Callable[[int], None] | None = None,
) -> Iterator[dict]:
    """Stream rows of ``{id, path}`` through the scorer in batches, yielding result rows in order.

    ``advance(n)`` is called after each batch (e.g. ``autolabel.progress.progress_bar``'s).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield from _run_batch(scorer, batch, advance)
            batch = []
    if batch:
        yield from _run_batch(scorer, batch, advance)


def _run_batch(scorer: PoolScorer, batch: list[dict], advance) -> list[dict]:
    mapped = scorer.map_rows(batch)
    if advance is not None:
        advance(len(batch))
    return mapped


def _error_row(image_id, error: str) -> dict:
    return {"id": image_id, "scores": None, "embedding": None, "detections": None, "error": error}


def _to_detections(result):
    """An ultralytics Results -> sv.Detections carrying ``class_probs`` when the predictor kept them."""
    import supervision as sv

    det = sv.Detections.from_ultralytics(result)
    det.data = {}  # drop class_name strings: ids are the ontology's
    probs = getattr(result, "class_probs", None)
    if probs is not None and len(probs) == len(det):
        det.data[uncertainty.CLASS_PROBS_KEY] = probs
    return det


def _scoring_predictor():
    """A DetectionPredictor that also keeps, per kept box, the raw per-class scores (``class_probs``)."""
    from ultralytics.models.yolo.detect import DetectionPredictor
    from ultralytics.utils import nms, ops

    class ScoringPredictor(DetectionPredictor):
        def postprocess(self, preds, img, orig_imgs, **kwargs):
            raw = preds[0] if isinstance(preds, (list, tuple)) else preds
            end2end = bool(getattr(self.model, "end2end", False)) or raw.shape[-1] == 6
            kept, indices = nms.non_max_suppression(
                raw,
                self.args.conf,
                self.args.iou,
                self.args.classes,
                self.args.agnostic_nms,
                max_det=self.args.max_det,
                end2end=end2end,
                return_idxs=True,
            )
            if not isinstance(orig_imgs, list):
                orig_imgs = ops.convert_torch2numpy_batch(orig_imgs)[..., ::-1]
            results = self.construct_results(kept, img, orig_imgs)
            num_classes = len(self.model.names)
            for b, (result, index) in enumerate(zip(results, indices)):
                result.class_probs = None
                if not end2end:
                    index = index.long().view(-1)
                    result.class_probs = raw[b, 4 : 4 + num_classes, index].T.float().cpu().numpy()
            return results

    return ScoringPredictor
