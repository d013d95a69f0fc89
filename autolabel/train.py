"""Student fine-tuning: the store's verified labels -> a YOLO dataset -> a training run.

Three stages, each usable alone:

* ``collect_dataset(store)`` reads the split (status 'labeled' = train, 'validation' = the frozen
  val set) and the verified boxes, and fingerprints both image lists (data lineage);
* ``write_yolo_dataset(snapshot, image_root, out_dir)`` materializes it as an ultralytics
  dataset (images as symlinks, YOLO txt labels, ``data.yaml``);
* ``train_student(workspace, store, settings)`` records a run (``autolabel.runs``), trains and
  records weights and training metrics. It returns the run id; the caller evaluates it on the
  frozen val set (``autolabel.evaluate.evaluate_run``) when ``settings.evaluate`` asks for it.

The student itself (what a run starts from, the fit, where its weights land) is
``autolabel.students``; its ultralytics backend downloads nothing unasked (see
``autolabel.students.yolo``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel import detections as dets
from autolabel import runs
from autolabel.config import TrainSettings
from autolabel.errors import AutolabelError
from autolabel.runs import images_hash

if TYPE_CHECKING:
    from autolabel.detections import LabeledImage
    from autolabel.store import ImageRecord, Store
    from autolabel.workspace import Workspace

TRAIN_STATUS = "labeled"
VAL_STATUS = "validation"


@dataclass(frozen=True)
class DatasetSnapshot:
    class_names: list[str]
    train: list[LabeledImage]
    val: list[LabeledImage]
    skipped: list[str] = field(default_factory=list)  # 'path: reason'

    @property
    def train_hash(self) -> str:
        return images_hash(im.sha256 for im in self.train)

    @property
    def val_hash(self) -> str:
        return images_hash(im.sha256 for im in self.val)


def collect_dataset(store: Store) -> DatasetSnapshot:
    """Train = images with status 'labeled', val = 'validation'; boxes from the verified labels."""
    names = store.class_names()
    if not names:
        raise AutolabelError("no classes in the store: set an ontology or import labels first")
    labels = store.labels()
    skipped: list[str] = []
    splits = {}
    for status in (TRAIN_STATUS, VAL_STATUS):
        rows = []
        for image in store.images(status=status):
            split_image = _split_image(image, labels.get(image.id), len(names), skipped)
            if split_image is not None:
                rows.append(split_image)
        splits[status] = rows
    snapshot = DatasetSnapshot(names, splits[TRAIN_STATUS], splits[VAL_STATUS], skipped)
    if not snapshot.train:
        raise AutolabelError(
            "no labeled training images: label some in Label Studio or run 'autolabel import'"
        )
    if not snapshot.val:
        raise AutolabelError("no validation images: run 'autolabel split' to freeze a validation set")
    return snapshot


def _split_image(image: ImageRecord, labels_json: str | None, n_classes: int, skipped: list[str]):
    if labels_json is None:
        skipped.append(f"{image.path}: status {image.status!r} but no verified labels")
        return None
    if not image.width or not image.height:
        skipped.append(f"{image.path}: unknown image size")
        return None
    det = dets.from_json(labels_json)
    if len(det) and (det.class_id.min() < 0 or det.class_id.max() >= n_classes):
        bad = sorted({int(c) for c in det.class_id if not 0 <= c < n_classes})
        raise AutolabelError(f"{image.path}: class ids {bad} are not in the store's {n_classes} classes")
    return dets.LabeledImage(
        image.id, image.path, int(image.width), int(image.height), det, sha256=image.sha256
    )


def write_yolo_dataset(snapshot: DatasetSnapshot, image_root: Path, out_dir: Path) -> Path:
    """``out_dir/{images,labels}/{train,val}`` + ``data.yaml``; returns the data.yaml path."""
    from autolabel.formats import yolo

    out_dir = Path(out_dir)
    for split, images in (("train", snapshot.train), ("val", snapshot.val)):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        entries = ((f"{split}/{yolo.dataset_file_name(im.id, im.path)}", im) for im in images)
        yolo.write_images(out_dir, image_root, entries)
    return yolo.write_data_yaml(
        out_dir, snapshot.class_names, train="images/train", val="images/val", path=str(out_dir.resolve())
    )


# -- training -------------------------------------------------------------------------------


def train_student(
    workspace: Workspace,
    store: Store,
    settings: TrainSettings | None = None,
    *,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Train one student on the store's current split; return the recorded run id.

    The run row holds the round (meta 'round'), the data fingerprints, the hyperparameters, the
    weights path (``runs/run-<id>/weights/best.pt``) and the metrics: the backend's own validation
    numbers under ``"trainer"`` (``runs.trainer_metrics``) and the timing under ``"train"``; ``autolabel.evaluate.evaluate_run``
    adds ours (``map50_95``, ``f1``, ...).
    """
    from autolabel import students
    from autolabel.runtime import configure_environment, resolve_device

    settings = settings or TrainSettings.from_config(workspace.config.train)
    warn = warn or (lambda message: None)
    for run_id in runs.reconcile_interrupted(store):
        warn(f"run {run_id} was interrupted (its process is gone): marked failed")
    snapshot = collect_dataset(store)
    for line in snapshot.skipped[:5]:
        warn(f"skipped {line}")
    if len(snapshot.skipped) > 5:
        warn(f"... and {len(snapshot.skipped) - 5} more skipped")

    configure_environment(workspace.cache_dir)
    backend, model = students.for_student(settings.student, settings.model)
    choice = students.choose(
        model, resume_from=settings.resume_from, download=not settings.offline, backend=backend
    )
    device = resolve_device(settings.device)
    if choice.warning:
        warn(choice.warning)

    base_weights, base_pretrained = runs.lineage_origin(
        store, resume_from=settings.resume_from, source=choice.source, pretrained=choice.pretrained
    )
    params = {
        **settings.model_dump(), "device": device, "model_source": choice.source, "pretrained": choice.pretrained,
        "base_weights": base_weights, "base_pretrained": base_pretrained,
        "pid": os.getpid(), "host": socket.gethostname(),  # lets a later command tell a killed run from a live one
    }  # fmt: skip
    run_id = runs.start(
        store,
        params,
        round_index=int(store.get_meta("round", "0") or 0),
        train_hash=snapshot.train_hash,
        val_hash=snapshot.val_hash,
        n_train=len(snapshot.train),
        n_val=len(snapshot.val),
    )
    run_dir = runs.run_directory(workspace, run_id)
    try:
        data_yaml = write_yolo_dataset(snapshot, workspace.image_root, run_dir / "data")
        started, cpu_started = time.perf_counter(), time.process_time()
        fit = students.start(choice, backend=backend).fit(data_yaml, settings, run_dir, device)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        weights, epochs = fit.weights, fit.epoch_seconds
        metrics = {
            runs.TRAINER_KEY: {"backend": backend, **fit.metrics},
            "train": {
                "seconds": round(elapsed, 2),
                "cpu_seconds": round(cpu, 2),  # this process's CPU time: comparable on a shared machine
                "epochs_run": len(epochs),
                "seconds_per_epoch": round(sum(epochs) / len(epochs), 3) if epochs else None,
            },
        }
        runs.finish(store, run_id, "finished", weights_path=str(weights), metrics=metrics)
    except BaseException:
        runs.finish(store, run_id, "failed")
        raise
    return run_id


__all__: Sequence[str] = (
    "DatasetSnapshot",
    "TrainSettings",
    "collect_dataset",
    "train_student",
    "write_yolo_dataset",
)
