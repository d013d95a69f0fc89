"""Student fine-tuning: the store's verified labels -> a YOLO dataset -> an ultralytics run.

Three stages, each usable alone:

* ``collect_dataset(store)`` reads the split (status 'labeled' = train, 'validation' = the frozen
  val set) and the verified boxes, and fingerprints both image lists (data lineage);
* ``write_yolo_dataset(snapshot, image_root, out_dir)`` materializes it as an ultralytics
  dataset (images as symlinks, YOLO txt labels, ``data.yaml``);
* ``train_student(workspace, store, settings)`` records a run in the store, trains, evaluates the
  result on the frozen val set and records weights and metrics. It returns the run id.

Nothing here downloads anything: ``configure_ultralytics`` puts a local font in place and turns
sync off, ``YOLO_OFFLINE=1`` is set for the run, and missing pretrained weights fall back to
training the same architecture from scratch with a warning instead of a download.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel import detections as dets
from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    from autolabel.config import TrainConfig
    from autolabel.detections import LabeledImage
    from autolabel.store import ImageRecord, Store
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
    weights path (``runs/run-<id>/weights/best.pt``) and the metrics: ours from
    ``autolabel.evaluate`` (``map50_95``, ``f1``, ...) plus ultralytics' own val numbers under
    ``"ultralytics"`` and the timing under ``"train"``.
    """
    from autolabel.runtime import configure_environment, configure_ultralytics, resolve_device

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


def with_overrides(settings: TrainSettings, **overrides) -> TrainSettings:
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


__all__: Sequence[str] = (
    "DatasetSnapshot",
    "ModelChoice",
    "TrainSettings",
    "collect_dataset",
    "images_hash",
    "resolve_model",
    "run_directory",
    "train_student",
    "write_yolo_dataset",
)
