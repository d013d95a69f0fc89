"""Student fine-tuning: the store's verified labels -> a YOLO dataset -> a training run.

Three stages, each usable alone:

* ``collect_dataset(store)`` reads the split (status 'labeled' = train, 'validation' = the frozen
  val set) and the verified boxes, and fingerprints both image lists (data lineage);
* ``write_yolo_dataset(snapshot, image_root, out_dir)`` materializes it as an ultralytics
  dataset (images as symlinks, YOLO txt labels, ``data.yaml``);
* ``train_student(workspace, store, settings)`` records a run in the store, trains, evaluates the
  result on the frozen val set and records weights and metrics. It returns the run id.

The student itself (what a run starts from, the fit, where its weights land) is
``autolabel.students``; its ultralytics backend downloads nothing unasked (see
``autolabel.students.yolo``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel import detections as dets
from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.config import TrainConfig
    from autolabel.store import ImageRecord, Store
    from autolabel.students.base import ModelChoice
    from autolabel.workspace import Workspace

TRAIN_STATUS = "labeled"
VAL_STATUS = "validation"


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    model: str = "yolo11n.pt"  # weights path / name in the ultralytics weights dir, or a model yaml
    epochs: int = 80
    imgsz: int = 640  # the deployment size
    batch: int = 16
    seed: int = 0
    patience: int = 20
    close_mosaic: int = 10  # mosaic off for the last N epochs
    device: str = "auto"
    workers: int = 2  # ultralytics forces 0 on CPU
    resume_from: str | None = None  # warm start: previous student's weights (a new run, not resume=True)
    deterministic: bool = True
    plots: bool = True
    val_each_epoch: bool = True  # False: validate only after the last epoch (best.pt = last epoch)
    warmup_epochs: float = 3.0  # LR warm-up; 0 for a warm start from an already trained student
    evaluate: bool = True  # run ``autolabel.evaluate`` on the frozen val set after training
    conf: float = 0.25  # operating confidence for the P/R/F1 of that evaluation
    iou: float = 0.5
    offline: bool = False  # never fetch missing official weights (YOLO_OFFLINE=1 does the same)

    @classmethod
    def from_config(cls, config: TrainConfig, **overrides) -> TrainSettings:
        base = {
            name: getattr(config, name)
            for name in (
                "model",
                "epochs",
                "imgsz",
                "batch",
                "seed",
                "patience",
                "close_mosaic",
                "device",
                "conf",
                "val_each_epoch",
            )
            if hasattr(config, name)
        }
        if hasattr(config, "eval_iou"):
            base["iou"] = config.eval_iou
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


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


def images_hash(sha256s) -> str:
    """sha256 over the sorted image content hashes: the same images give the same id, in any order."""
    return hashlib.sha256("\n".join(sorted(sha256s)).encode()).hexdigest()


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
    weights path (``runs/run-<id>/weights/best.pt``) and the metrics: ours from
    ``autolabel.evaluate`` (``map50_95``, ``f1``, ...) plus ultralytics' own val numbers under
    ``"ultralytics"`` and the timing under ``"train"``.
    """
    from autolabel import students
    from autolabel.runtime import configure_environment, resolve_device

    settings = settings or TrainSettings.from_config(workspace.config.train)
    warn = warn or (lambda message: None)
    for run_id in reconcile_interrupted_runs(store):
        warn(f"run {run_id} was interrupted (its process is gone): marked failed")
    snapshot = collect_dataset(store)
    for line in snapshot.skipped[:5]:
        warn(f"skipped {line}")
    if len(snapshot.skipped) > 5:
        warn(f"... and {len(snapshot.skipped) - 5} more skipped")

    configure_environment(workspace.cache_dir)
    choice = students.choose(settings.model, resume_from=settings.resume_from, download=not settings.offline)
    device = resolve_device(settings.device)
    if choice.warning:
        warn(choice.warning)

    base_weights, base_pretrained = _base_weights(store, settings, choice)
    params = {
        **asdict(settings), "device": device, "model_source": choice.source, "pretrained": choice.pretrained,
        "base_weights": base_weights, "base_pretrained": base_pretrained,
        "pid": os.getpid(), "host": socket.gethostname(),  # lets a later command tell a killed run from a live one
    }  # fmt: skip
    run_id = store.start_run(
        json.dumps(params, sort_keys=True),
        int(store.get_meta("round", "0") or 0),
        train_hash=snapshot.train_hash,
        val_hash=snapshot.val_hash,
        n_train=len(snapshot.train),
        n_val=len(snapshot.val),
    )
    run_dir = run_directory(workspace, run_id)
    try:
        data_yaml = write_yolo_dataset(snapshot, workspace.image_root, run_dir / "data")
        started, cpu_started = time.perf_counter(), time.process_time()
        fit = students.start(choice).fit(data_yaml, settings, run_dir, device)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        weights, epochs = fit.weights, fit.epoch_seconds
        metrics = {
            "ultralytics": fit.metrics,  # the key predates other backends: recorded runs keep it
            "train": {
                "seconds": round(elapsed, 2),
                "cpu_seconds": round(cpu, 2),  # this process's CPU time: comparable on a shared machine
                "epochs_run": len(epochs),
                "seconds_per_epoch": round(sum(epochs) / len(epochs), 3) if epochs else None,
            },
        }
        store.finish_run(run_id, "finished", str(weights), json.dumps(metrics))
    except BaseException:
        store.finish_run(run_id, "failed", None, None)
        raise
    if settings.evaluate:
        from autolabel.evaluate import evaluate_run

        evaluate_run(workspace, store, run_id, conf=settings.conf, iou=settings.iou)
    return run_id


def reconcile_interrupted_runs(store: Store) -> list[int]:
    """Mark 'started' runs whose process on this host is gone as 'failed'; their ids."""
    from autolabel.runtime import pid_alive

    stale = []
    for run in store.runs(status="started"):
        params = json.loads(run["params"] or "{}")
        pid, host = params.get("pid"), params.get("host")
        if pid is None or host != socket.gethostname() or pid_alive(int(pid)):
            continue  # an older run without a pid, another machine's, or still running
        stale.append(run["id"])
    for run_id in stale:
        store.finish_run(
            run_id, "failed", None, json.dumps({"error": "interrupted: its process ended before it finished"})
        )
    return stale


def _base_weights(store: Store, settings: TrainSettings, choice: ModelChoice) -> tuple[str, bool]:
    """The weights a run's lineage started from (a name, never a full path) and whether they were
    pretrained: a warm start inherits them from the run whose weights it starts from."""
    if settings.resume_from is not None:
        resumed = str(Path(settings.resume_from).resolve())
        for run in store.runs(status="finished"):
            if run["weights_path"] and str(Path(run["weights_path"]).resolve()) == resumed:
                params = json.loads(run["params"] or "{}")
                if "base_weights" in params:
                    return params["base_weights"], bool(params.get("base_pretrained"))
        return Path(settings.resume_from).name, True
    return Path(choice.source).name, choice.pretrained


def run_origin(params: dict) -> tuple[str, bool]:
    """(the weights file name a run's lineage started from, whether they were pretrained); runs
    recorded before ``base_weights`` existed fall back to their own model source."""
    name = (
        params.get("base_weights") or Path(str(params.get("model_source") or params.get("model") or "?")).name
    )
    return name, bool(params.get("base_pretrained", params.get("pretrained")))


def started_from(params: dict) -> str:
    """'yolo11n.pt (pretrained)' / 'yolo11n.yaml (random init)' for status and the model card."""
    name, pretrained = run_origin(params)
    return f"{name} ({'pretrained' if pretrained else 'random init'})"


def latest_train_run(
    store: Store, *, before_round: int | None = None, weights_on_disk: bool = False
) -> dict | None:
    """The newest finished training run with weights, optionally from a round before ``before_round``."""
    runs = [r for r in store.runs(status="finished") if r["kind"] == "train" and r["weights_path"]]
    if before_round is not None:
        runs = [r for r in runs if r["round"] < before_round]
    if weights_on_disk:
        runs = [r for r in runs if Path(r["weights_path"]).is_file()]
    return dict(runs[-1]) if runs else None


def run_directory(workspace: Workspace, run_id: int) -> Path:
    return workspace.runs_dir / f"run-{run_id}"


def with_overrides(settings: TrainSettings, **overrides) -> TrainSettings:
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


__all__: Sequence[str] = (
    "DatasetSnapshot",
    "TrainSettings",
    "collect_dataset",
    "images_hash",
    "run_directory",
    "train_student",
    "write_yolo_dataset",
)
