"""Student fine-tuning: the store's verified labels -> a YOLO dataset -> an ultralytics run.

Three stages, each usable alone:

* ``collect_dataset(store)`` reads the split (status 'labeled' = train, 'validation' = the frozen
  val set) and the verified boxes, and fingerprints both image lists (data lineage);
* ``write_yolo_dataset(snapshot, image_root, out_dir)`` materializes it as an ultralytics
  dataset (images as symlinks, YOLO txt labels, ``data.yaml``);
* ``train_student(workspace, store, settings)`` records a run (``autolabel.runs``), trains and
  records weights and training metrics. It returns the run id; the caller evaluates it on the
  frozen val set (``autolabel.evaluate.evaluate_run``) when ``settings.evaluate`` asks for it.

Nothing here downloads anything: ``configure_ultralytics`` puts a local font in place and turns
sync off, ``YOLO_OFFLINE=1`` is set for the run, and missing pretrained weights fall back to
training the same architecture from scratch with a warning instead of a download.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel import detections as dets
from autolabel import runs
from autolabel.config import TrainSettings
from autolabel.errors import AutolabelError
from autolabel.runs import images_hash

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.store import ImageRecord, Store
    from autolabel.workspace import Workspace

TRAIN_STATUS = "labeled"
VAL_STATUS = "validation"


@dataclass(frozen=True)
class SplitImage:
    id: int
    path: str  # relative to the image root
    sha256: str
    width: int
    height: int
    detections: sv.Detections


@dataclass(frozen=True)
class DatasetSnapshot:
    class_names: list[str]
    train: list[SplitImage]
    val: list[SplitImage]
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
    return SplitImage(image.id, image.path, image.sha256, int(image.width), int(image.height), det)


def write_yolo_dataset(snapshot: DatasetSnapshot, image_root: Path, out_dir: Path) -> Path:
    """``out_dir/{images,labels}/{train,val}`` + ``data.yaml``; returns the data.yaml path."""
    from autolabel.formats import yolo

    out_dir = Path(out_dir)
    for split, images in (("train", snapshot.train), ("val", snapshot.val)):
        image_dir, label_dir = out_dir / "images" / split, out_dir / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for image in images:
            name = dataset_file_name(image.id, image.path)
            link = image_dir / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to((Path(image_root) / image.path).resolve())
            lines = yolo.to_lines(image.detections, image.width, image.height)
            (label_dir / Path(name).with_suffix(".txt")).write_text("".join(f"{line}\n" for line in lines))
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(
        yolo.data_yaml(
            snapshot.class_names, train="images/train", val="images/val", path=str(out_dir.resolve())
        )
    )
    return data_yaml


def dataset_file_name(image_id: int, rel_path: str) -> str:
    """Unique and stable per image: two 'img_001.jpg' in different folders must not collide."""
    path = Path(rel_path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:80]
    return f"{image_id:06d}_{stem}{path.suffix.lower()}"


# -- model choice ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    source: str  # what YOLO() gets: a weights path or a yaml name
    pretrained: bool
    warning: str | None = None


def resolve_model(model: str, weights_dir: Path | None = None, *, download: bool = True) -> ModelChoice:
    """Weights if present (a path, or a name found in the ultralytics weights dir), else the yaml.

    An official name such as ``yolo11n.pt`` that is nowhere on disk is fetched into the weights dir
    through ultralytics' own asset download when ``download`` is on and the machine is online (as
    every ultralytics user expects); offline (``YOLO_OFFLINE=1``, ``--offline``, no network) or when
    the download fails it becomes ``yolo11n.yaml`` (same architecture, random init) with a one-line
    warning. A missing path with folders in it is an error.
    """
    if model.endswith((".yaml", ".yml")):
        return ModelChoice(model, pretrained=False)
    path = Path(model).expanduser()
    if path.is_file():
        return ModelChoice(str(path.resolve()), pretrained=True)
    if weights_dir is not None and path.name == model and (Path(weights_dir) / model).is_file():
        return ModelChoice(str(Path(weights_dir) / model), pretrained=True)
    if path.name != model or path.suffix != ".pt":
        raise AutolabelError(f"--model {model}: file not found")
    if download and weights_dir is not None:
        fetched = _download_official(model, Path(weights_dir))
        if fetched is not None:
            return ModelChoice(str(fetched), pretrained=True)
    yaml_name = path.with_suffix(".yaml").name
    from autolabel.runtime import offline_requested

    where = (
        "offline"
        if not download or offline_requested()
        else f"looked in the working folder and {weights_dir}"
    )
    return ModelChoice(
        yaml_name,
        pretrained=False,
        warning=(
            f"pretrained weights {model} not found ({where}); training {yaml_name} from scratch, "
            f"which needs many more epochs. Put {model} there or pass --model PATH to fine-tune."
        ),
    )


def _download_official(name: str, weights_dir: Path) -> Path | None:
    """``name`` from the ultralytics release assets into ``weights_dir``; None offline or on failure.

    The process runs with autolabel's own YOLO_OFFLINE=1 (nothing else may reach the network), so
    it is lifted for this one download, and only when the user did not ask for offline."""
    from autolabel.runtime import offline_requested

    if offline_requested():
        return None
    from ultralytics.utils import is_online
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    target = weights_dir / name
    with _yolo_offline(False):
        if name not in GITHUB_ASSETS_NAMES or not is_online():
            return None
        try:
            weights_dir.mkdir(parents=True, exist_ok=True)
            attempt_download_asset(target)
        except Exception:  # a failed download falls back like offline; the warning says what to do  # noqa: BLE001
            return None
    return target if target.is_file() else None


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
    weights path (``runs/run-<id>/weights/best.pt``) and the metrics: ultralytics' own val numbers
    under ``"ultralytics"`` and the timing under ``"train"``; ``autolabel.evaluate.evaluate_run``
    adds ours (``map50_95``, ``f1``, ...).
    """
    from autolabel.runtime import configure_environment, configure_ultralytics, resolve_device

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
    configure_ultralytics()
    from ultralytics.utils import SETTINGS

    device = resolve_device(settings.device)
    if settings.resume_from is not None:
        if not Path(settings.resume_from).is_file():
            raise AutolabelError(f"--resume-from {settings.resume_from}: file not found")
        choice = ModelChoice(str(Path(settings.resume_from).resolve()), pretrained=True)
    else:
        choice = resolve_model(settings.model, Path(SETTINGS["weights_dir"]), download=not settings.offline)
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
        ultra_metrics = _fit(choice, settings, device, data_yaml, run_dir)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        weights = _best_weights(run_dir)
        epochs = _epoch_times(run_dir / "results.csv")
        metrics = {
            "ultralytics": ultra_metrics,
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


def _fit(choice: ModelChoice, settings: TrainSettings, device: str, data_yaml: Path, run_dir: Path) -> dict:
    from ultralytics import YOLO

    model = YOLO(choice.source)
    with _yolo_offline(True), _no_amp_download(device):
        model.train(
            data=str(data_yaml),
            epochs=settings.epochs,
            imgsz=settings.imgsz,
            batch=settings.batch,
            seed=settings.seed,
            deterministic=settings.deterministic,
            patience=settings.patience,
            close_mosaic=min(settings.close_mosaic, settings.epochs),
            device=device,
            workers=settings.workers,
            project=str(run_dir.parent),
            name=run_dir.name,
            exist_ok=True,
            pretrained=choice.pretrained,
            plots=settings.plots,
            val=settings.val_each_epoch,
            warmup_epochs=settings.warmup_epochs,
            verbose=False,
        )
    trainer_metrics = getattr(model.trainer, "metrics", None) or {}
    keys = {
        "metrics/precision(B)": "precision",
        "metrics/recall(B)": "recall",
        "metrics/mAP50(B)": "map50",
        "metrics/mAP50-95(B)": "map50_95",
    }
    return {
        ours: round(float(trainer_metrics[theirs]), 5)
        for theirs, ours in keys.items()
        if theirs in trainer_metrics
    }


def _best_weights(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        path = run_dir / "weights" / name
        if path.is_file():
            return path
    raise AutolabelError(f"training finished without weights in {run_dir / 'weights'}")


def _epoch_times(results_csv: Path) -> list[float]:
    """Seconds per epoch from ultralytics' results.csv (its 'time' column is cumulative)."""
    import csv

    if not results_csv.is_file():
        return []
    with results_csv.open() as fh:
        cumulative = [float(row["time"]) for row in csv.DictReader(fh) if row.get("time")]
    return [b - a for a, b in zip([0.0, *cumulative], cumulative)]


@contextmanager
def _yolo_offline(on: bool) -> Iterator[None]:
    """YOLO_OFFLINE set (or removed) for the block, then put back as it was."""
    old = os.environ.get("YOLO_OFFLINE")
    if on:
        os.environ["YOLO_OFFLINE"] = "1"
    else:
        os.environ.pop("YOLO_OFFLINE", None)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("YOLO_OFFLINE", None)
        else:
            os.environ["YOLO_OFFLINE"] = old


@contextmanager
def _no_amp_download(device: str) -> Iterator[None]:
    """On CUDA ultralytics' AMP check loads yolo26n.pt, downloading it when absent; skip it then."""
    if not device.startswith("cuda"):
        yield
        return
    from ultralytics.engine import trainer
    from ultralytics.utils import SETTINGS

    if (Path(SETTINGS["weights_dir"]) / "yolo26n.pt").is_file():
        yield
        return
    original = trainer.check_amp
    trainer.check_amp = lambda model: True
    try:
        yield
    finally:
        trainer.check_amp = original


__all__: Sequence[str] = (
    "DatasetSnapshot",
    "ModelChoice",
    "TrainSettings",
    "collect_dataset",
    "resolve_model",
    "train_student",
    "write_yolo_dataset",
)
