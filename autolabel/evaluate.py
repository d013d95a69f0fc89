"""Validation numbers that can be trusted: COCO mAP, size-stratified AP, P/R/F1 at a threshold.

Pure functions over lists of ``sv.Detections`` (one truth and one prediction per image):

* ``coco_metrics``: mAP50, mAP50-95, AP small/medium/large and per-class AP, computed by
  faster-coco-eval (the pycocotools algorithm: 101-point interpolated precision, greedy matching
  by score, at most 100 detections per image, areas < 32² / < 96² / larger);
* ``threshold_metrics``: precision, recall and F1 of the predictions at the operating confidence,
  one-to-one greedy matching by descending score at an IoU threshold, class must match (two
  predictions on one object are one TP and one FP), and a confusion matrix whose last row and
  column are background;
* ``evaluate_run``: a recorded training run's weights on the frozen val images, metrics JSON into
  the run (store and ``runs/run-<id>/eval/metrics.json``) and a PNG of truth vs predictions.

Why our mAP differs from ultralytics' ``model.val()`` on the same weights and images:
the big one is that ultralytics' validator runs NMS with ``multi_label=True``: at conf 0.001 one
box is kept once per class whose score passes, so an undecided model gets extra chances at the
right class. ``model.predict`` (what a deployed student does, and what we score) keeps one label
per box. On a weak 80-epoch synthetic student this alone doubles mAP50-95 (0.145 vs 0.070 with
ultralytics' own validator patched to single-label NMS; ours 0.074, see BENCHMARKS.md). Smaller
differences: ultralytics integrates a continuous-interpolated PR curve (``np.interp`` over 101
recall points with sentinels, then ``np.trapz``) where COCO averages the precision envelope
sampled at 101 recall points; it matches by highest IoU per threshold (``match_predictions``)
rather than COCO's greedy pass by score; it keeps up to 300 detections per image where COCO
scores the top 100; and it letterboxes whole batches in rectangular mode where our predictor
pads each image to a multiple of the stride. Those together moved mAP50-95 by < 0.005 there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel import detections as dets
from autolabel import runs
from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.store import Store
    from autolabel.workspace import Workspace

MAP_CONF = 0.001  # predictions kept for mAP: the whole PR curve
MAP_MAX_DET = 300


# -- COCO AP --------------------------------------------------------------------------------


def coco_metrics(
    truths: Sequence[sv.Detections],
    predictions: Sequence[sv.Detections],
    sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
) -> dict:
    """COCO box AP; values a category set cannot define (no truth of that size/class) are None.

    ``sizes`` are (width, height) per image.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    from autolabel.formats import coco

    names = list(class_names)
    images = [
        (i + 1, f"{i + 1}.jpg", int(w), int(h), truth) for i, (truth, (w, h)) in enumerate(zip(truths, sizes))
    ]
    truth_dict = coco.dataset(names, images)
    results = []
    for i, pred in enumerate(predictions):
        results += coco.annotations(pred, i + 1, len(results) + 1, with_scores=True)
    keys = ("map50_95", "map50", "ap_small", "ap_medium", "ap_large")
    if not truth_dict["annotations"]:
        return {
            **dict.fromkeys(keys),
            "per_class_ap": dict.fromkeys(names),
            "per_class_ap50": dict.fromkeys(names),
        }
    if not results:  # nothing predicted: every defined AP is 0
        out = {k: 0.0 for k in ("map50_95", "map50")}
        areas = [a["area"] for a in truth_dict["annotations"]]
        out["ap_small"] = 0.0 if any(a < 32**2 for a in areas) else None
        out["ap_medium"] = 0.0 if any(32**2 <= a < 96**2 for a in areas) else None
        out["ap_large"] = 0.0 if any(a >= 96**2 for a in areas) else None
        present = {a["category_id"] - 1 for a in truth_dict["annotations"]}
        per_class = {name: (0.0 if i in present else None) for i, name in enumerate(names)}
        return {**out, "per_class_ap": per_class, "per_class_ap50": dict(per_class)}

    quiet = logging.getLogger("autolabel.evaluate.coco").debug
    truth_api = COCO(truth_dict, print_function=quiet)
    result_api = truth_api.loadRes(results)
    evaluator = COCOeval_faster(truth_api, result_api, iouType="bbox", print_function=quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = [float(s) for s in evaluator.stats[:6]]
    out = {
        "map50_95": _defined(stats[0]),
        "map50": _defined(stats[1]),
        "ap_small": _defined(stats[3]),
        "ap_medium": _defined(stats[4]),
        "ap_large": _defined(stats[5]),
    }
    precision = evaluator.eval["precision"]  # [iou T, recall R, class K, area A, maxdet M]
    cat_ids = list(evaluator.params.catIds)
    per_class, per_class50 = {}, {}
    for i, name in enumerate(names):
        k = cat_ids.index(i + 1)
        per_class[name] = _mean_defined(precision[:, :, k, 0, -1])
        per_class50[name] = _mean_defined(precision[0, :, k, 0, -1])
    return {**out, "per_class_ap": per_class, "per_class_ap50": per_class50}


def _defined(value: float) -> float | None:
    return None if value < 0 else round(value, 5)


def _mean_defined(values: np.ndarray) -> float | None:
    values = values[values > -1]
    return None if values.size == 0 else round(float(values.mean()), 5)


# -- P/R/F1 at a threshold ------------------------------------------------------------------


def match_image(
    truth: sv.Detections, pred: sv.Detections, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by descending score, class must match.

    Returns ``(truth_index_per_prediction, matched_truth_mask)``; -1 marks a false positive.
    Each prediction takes the unmatched same-class truth it overlaps most (IoU >= threshold).
    """
    import supervision as sv

    assigned = np.full(len(pred), -1, dtype=int)
    taken = np.zeros(len(truth), dtype=bool)
    if len(pred) == 0 or len(truth) == 0:
        return assigned, taken
    ious = sv.box_iou_batch(pred.xyxy, truth.xyxy)
    order = np.argsort(-_scores(pred), kind="stable")
    for p in order:
        candidates = (~taken) & (truth.class_id == pred.class_id[p]) & (ious[p] >= iou_threshold)
        if candidates.any():
            t = int(np.argmax(np.where(candidates, ious[p], -1.0)))
            assigned[p] = t
            taken[t] = True
    return assigned, taken


def threshold_metrics(
    truths: Sequence[sv.Detections],
    predictions: Sequence[sv.Detections],
    class_names: Sequence[str],
    conf: float = 0.25,
    iou: float = 0.5,
) -> dict:
    """Precision / recall / F1 at ``conf`` and a confusion matrix.

    The confusion matrix is ``[truth class or background][predicted class or background]``; its
    diagonal is exactly the class-aware true positives. Predictions left over after class-aware
    matching are matched class-agnostically (same greedy rule) to left-over truths: those are the
    off-diagonal confusions; the rest go to the background row / column.
    """
    import supervision as sv

    n = len(class_names)
    confusion = np.zeros((n + 1, n + 1), dtype=int)
    tp = np.zeros(n, dtype=int)
    fp = np.zeros(n, dtype=int)
    fn = np.zeros(n, dtype=int)
    for truth, pred in zip(truths, predictions):
        pred = pred[_scores(pred) >= conf] if len(pred) else pred
        assigned, taken = match_image(truth, pred, iou)
        for p, t in enumerate(assigned):
            cls = int(pred.class_id[p])
            if t >= 0:
                tp[cls] += 1
                confusion[cls, cls] += 1
            else:
                fp[cls] += 1
        for t in np.flatnonzero(~taken):
            fn[int(truth.class_id[t])] += 1
        # left-overs: a wrong class on a real object, or background
        left_pred = np.flatnonzero(assigned < 0)
        left_truth = np.flatnonzero(~taken)
        used = np.zeros(len(left_truth), dtype=bool)
        if len(left_pred) and len(left_truth):
            ious = sv.box_iou_batch(pred.xyxy[left_pred], truth.xyxy[left_truth])
            for row in np.argsort(-_scores(pred)[left_pred], kind="stable"):
                candidates = (~used) & (ious[row] >= iou)
                if candidates.any():
                    col = int(np.argmax(np.where(candidates, ious[row], -1.0)))
                    used[col] = True
                    confusion[int(truth.class_id[left_truth[col]]), int(pred.class_id[left_pred[row]])] += 1
                    left_pred[row] = -1
        for p in left_pred[left_pred >= 0]:
            confusion[n, int(pred.class_id[p])] += 1
        for col, t in enumerate(left_truth):
            if not used[col]:
                confusion[int(truth.class_id[t]), n] += 1
    precision, recall, f1 = _prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    per_class = {}
    for i, name in enumerate(class_names):
        p, r, f = _prf(int(tp[i]), int(fp[i]), int(fn[i]))
        per_class[name] = {
            "tp": int(tp[i]),
            "fp": int(fp[i]),
            "fn": int(fn[i]),
            "precision": p,
            "recall": r,
            "f1": f,
        }
    return {
        "conf": conf,
        "iou": iou,
        "tp": int(tp.sum()),
        "fp": int(fp.sum()),
        "fn": int(fn.sum()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "confusion_labels": [*class_names, "background"],
    }


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Zero where undefined (no predictions / no truths), as ultralytics reports it."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return round(precision, 5), round(recall, 5), round(f1, 5)


def _scores(det: sv.Detections) -> np.ndarray:
    return det.confidence if det.confidence is not None else np.ones(len(det), dtype=np.float32)


def compute_metrics(
    truths: Sequence[sv.Detections],
    predictions: Sequence[sv.Detections],
    sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
    conf: float = 0.25,
    iou: float = 0.5,
) -> dict:
    """Everything ``autolabel eval`` records: COCO AP plus P/R/F1 and the confusion matrix."""
    if not (len(truths) == len(predictions) == len(sizes)):
        raise ValueError("truths, predictions and sizes must have one entry per image")
    return {
        **coco_metrics(truths, predictions, sizes, class_names),
        **threshold_metrics(truths, predictions, class_names, conf=conf, iou=iou),
        "n_images": len(truths),
        "n_truth": int(sum(len(t) for t in truths)),
    }


# -- a recorded run on the frozen val set ---------------------------------------------------


@dataclass(frozen=True)
class EvalReport:
    run_id: int
    metrics: dict
    metrics_path: Path
    preview_path: Path | None


def evaluate_run(
    workspace: Workspace,
    store: Store,
    run_id: int | None = None,
    *,
    conf: float = 0.25,
    iou: float = 0.5,
    preview_count: int = 8,
    advance: Callable[[int], None] | None = None,
) -> EvalReport:
    """Predict the frozen val images with the run's weights, score them, record the metrics."""
    from autolabel.images import ImageDecodeError, decode
    from autolabel.proposers.student import StudentProposer

    if run_id is None:
        run = runs.latest_finished(store)
        if run is None:
            raise AutolabelError("no finished training run: run 'autolabel train' first")
    else:
        run = runs.get(store, run_id)
        if run is None:
            raise AutolabelError(f"no run {run_id}: see 'autolabel status' for the recorded runs")
    run_id = run.id
    if not run.weights_path or not Path(run.weights_path).is_file():
        raise AutolabelError(f"run {run_id} has no weights (status {run.status}): train again")
    class_names = store.class_names()
    labels = store.labels()
    val = [im for im in store.images(status="validation") if im.id in labels]
    if not val:
        raise AutolabelError("no labeled validation images: run 'autolabel split' first")

    student = StudentProposer(
        run.weights_path,
        conf=MAP_CONF,
        max_det=MAP_MAX_DET,
        imgsz=int(run.params.get("imgsz", 640)),
        device="auto",  # the run may have trained elsewhere (a GPU box); predict on what is here
    )
    if len(student.class_names) != len(class_names):
        raise AutolabelError(
            f"run {run_id} was trained on {len(student.class_names)} classes, the store has {len(class_names)}"
        )
    truths, predictions, sizes, pixels, kept = [], [], [], {}, []
    batch = 8
    for start in range(0, len(val), batch):
        chunk, arrays = [], []
        for image in val[start : start + batch]:
            try:
                arrays.append(decode(workspace.image_root / image.path).pixels)
                chunk.append(image)
            except ImageDecodeError:
                continue
        for image, array, pred in zip(chunk, arrays, student.predict(arrays)):
            truths.append(dets.from_json(labels[image.id]))
            predictions.append(pred)
            sizes.append((array.shape[1], array.shape[0]))
            kept.append(image)
            if len(pixels) < preview_count:
                pixels[image.id] = array
        if advance:
            advance(len(val[start : start + batch]))

    metrics = compute_metrics(truths, predictions, sizes, class_names, conf=conf, iou=iou)
    metrics["val_hash"] = runs.images_hash(im.sha256 for im in kept)
    metrics["val_hash_matches_run"] = metrics["val_hash"] == run.val_hash
    out_dir = runs.run_directory(workspace, run_id) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    preview = None
    if pixels:
        preview = render_comparison(
            [(pixels[im.id], truths[i], predictions[i]) for i, im in enumerate(kept) if im.id in pixels],
            [im.path for im in kept if im.id in pixels],
            class_names,
            conf,
            out_dir / "predictions.png",
        )
        metrics["preview"] = str(preview)
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2))
    runs.merge_metrics(store, run, metrics)
    return EvalReport(run_id, metrics, metrics_path, preview)


def render_comparison(
    items: Sequence[tuple[np.ndarray, sv.Detections, sv.Detections]],
    names: Sequence[str],
    class_names: Sequence[str],
    conf: float,
    out_path: Path,
) -> Path:
    """Pairs of tiles: the verified truth, then the predictions at the operating confidence."""
    from autolabel.preview import render_grid

    tiles, titles = [], []
    for (image, truth, pred), name in zip(items, names):
        shown = pred[_scores(pred) >= conf] if len(pred) else pred
        tiles += [(image, truth), (image, shown)]
        titles += [f"truth {Path(name).name}", f"predicted (conf>={conf:g})"]
    return render_grid(tiles, class_names, out_path, titles=titles, columns=4 if len(tiles) >= 4 else 2)
