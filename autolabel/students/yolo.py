"""The ultralytics YOLO student; with ``yolo_export``, the one place that builds ultralytics' ``YOLO``.

Nothing here downloads anything unasked: ``configure_ultralytics`` puts a local font in place and
turns sync off, ``YOLO_OFFLINE=1`` is set for training, and missing pretrained weights fall back
to training the same architecture from scratch with a warning (``resolve_model``) unless the
machine is online and the user did not ask for offline.

Scoring (``score``) keeps, per box NMS kept, YOLO's per-class sigmoid scores (taken from the raw
head output at the kept indices), and captures the output of the last backbone layer (C2PSA in
YOLO11, SPPF in YOLOv8; found as ``len(yaml["backbone"]) - 1``) with a forward hook during the
same pass, global-average-pooled over space and L2-normalized: a 256-d vector for yolo11n.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.runtime import configure_ultralytics
from autolabel.students.base import FitResult, ModelChoice, RawBoxes, RawDiff, ScoredImage

if TYPE_CHECKING:
    import torch

    from autolabel.exported.options import ExportOptions
    from autolabel.students.base import FitSettings


class YoloStudent:
    """An ultralytics ``YOLO`` model and the weights (or config) it was loaded from."""

    backend = "yolo"
    reference_name = "model.pt"
    preprocessing = "letterboxed"

    def __init__(self, model, source: str | Path, *, pretrained: bool = True):
        self.model = model  # ultralytics.YOLO
        self.source = Path(str(source))
        self.pretrained = pretrained
        self._features: list[Any] = []
        self._hook = None
        self._scoring_predictor = None

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def choose(cls, model: str, *, resume_from: str | None = None, download: bool = True) -> ModelChoice:
        configure_ultralytics()
        if resume_from is not None:
            if not Path(resume_from).is_file():
                raise AutolabelError(f"--resume-from {resume_from}: file not found")
            return ModelChoice(str(Path(resume_from).resolve()), pretrained=True)
        return resolve_model(model, weights_dir(), download=download)

    @classmethod
    def start(cls, choice: ModelChoice) -> YoloStudent:
        configure_ultralytics()
        from ultralytics import YOLO

        return cls(YOLO(choice.source), choice.source, pretrained=choice.pretrained)

    @classmethod
    def load(cls, weights: str | Path) -> YoloStudent:
        """Any format ultralytics reads (.pt, .onnx, .engine, an OpenVINO folder, a yaml) as a detector."""
        configure_ultralytics()
        from ultralytics import YOLO

        return cls(YOLO(str(weights), task="detect"), weights)

    @classmethod
    def copy_reference(cls, weights: Path, out_dir: Path) -> Path:
        import shutil

        reference = out_dir / cls.reference_name
        if not reference.exists() or not reference.samefile(weights):
            shutil.copyfile(weights, reference)
        return reference

    @classmethod
    def check_export(cls, options: ExportOptions) -> None:
        return None  # every variant ``ExportOptions`` allows

    @classmethod
    def license_note(cls, *, model: str | None, pretrained: bool) -> str:
        from autolabel.students.yolo_export import LICENSE_NOTE

        return LICENSE_NOTE

    @property
    def class_names(self) -> list[str]:
        # read on use: for an exported file ultralytics sets up a predictor to learn them
        return names_list(self.model.names)

    @property
    def can_embed(self) -> bool:
        return self._backbone_layer() is not None

    # -- training --------------------------------------------------------------------------------
    def fit(self, data_yaml: Path, settings: FitSettings, run_dir: Path, device: str) -> FitResult:
        with _yolo_offline(True), _no_amp_download(device):
            self.model.train(
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
                pretrained=self.pretrained,
                plots=settings.plots,
                val=settings.val_each_epoch,
                warmup_epochs=settings.warmup_epochs,
                verbose=False,
            )
        trainer_metrics = getattr(self.model.trainer, "metrics", None) or {}
        keys = {
            "metrics/precision(B)": "precision",
            "metrics/recall(B)": "recall",
            "metrics/mAP50(B)": "map50",
            "metrics/mAP50-95(B)": "map50_95",
        }
        metrics = {
            ours: round(float(trainer_metrics[theirs]), 5)
            for theirs, ours in keys.items()
            if theirs in trainer_metrics
        }
        return FitResult(
            weights=_best_weights(run_dir),
            metrics=metrics,
            epoch_seconds=_epoch_times(run_dir / "results.csv"),
        )

    # -- inference -------------------------------------------------------------------------------
    def predict(
        self,
        images: Sequence[np.ndarray],
        *,
        conf: float,
        imgsz: int,
        iou: float = 0.7,
        max_det: int = 300,
        device: str = "cpu",
        square: bool = False,
    ) -> list[RawBoxes]:
        results = self.model.predict(
            _bgr(images),
            conf=conf,
            iou=iou,
            imgsz=imgsz,
            max_det=max_det,
            device=device,
            verbose=False,
            **({"rect": False} if square else {}),
        )
        return [
            RawBoxes(
                xyxy=result.boxes.xyxy.cpu().numpy().astype(np.float32),
                confidence=result.boxes.conf.cpu().numpy().astype(np.float32),
                class_id=result.boxes.cls.cpu().numpy().astype(int),
            )
            for result in results
        ]

    def score(
        self,
        images: Sequence[np.ndarray],
        *,
        conf: float,
        iou: float,
        imgsz: int,
        max_det: int,
        device: str,
        embed: bool,
    ) -> list[ScoredImage]:
        embed = embed and self._attach_embedding_hook()
        self._features.clear()
        results = self._predict_scored(
            images, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, device=device
        )
        embeddings = self._pooled_features(len(images)) if embed else None
        return [
            ScoredImage(
                detections=_to_detections(result),
                embedding=embeddings[i] if embeddings is not None else None,
            )
            for i, result in enumerate(results)
        ]

    def embed(self, images: Sequence[np.ndarray], *, imgsz: int, device: str) -> np.ndarray | None:
        if not images or not self.can_embed:
            return None
        scored = self.score(images, conf=0.25, iou=0.7, imgsz=imgsz, max_det=300, device=device, embed=True)
        return np.stack([s.embedding for s in scored])

    def _predict_scored(self, images: Sequence[np.ndarray], *, conf, iou, imgsz, max_det, device) -> list:
        """ultralytics Results carrying ``class_probs``: the per-class scores of each kept box."""
        if self._scoring_predictor is None:
            self._scoring_predictor = _scoring_predictor()
        bgr = _bgr(images)
        return self.model.predict(
            bgr,
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            max_det=max_det,
            device=device,
            batch=len(bgr),
            verbose=False,
            predictor=self._scoring_predictor,
        )

    def _backbone_layer(self):
        net = getattr(self.model, "model", None)
        yaml = getattr(net, "yaml", None)
        layers = getattr(net, "model", None)
        if not isinstance(yaml, dict) or "backbone" not in yaml or layers is None:
            return None
        return layers[len(yaml["backbone"]) - 1]

    def _attach_embedding_hook(self) -> bool:
        if self._hook is None:
            layer = self._backbone_layer()
            if layer is None:
                return False
            self._hook = layer.register_forward_hook(
                lambda _module, _inputs, output: self._features.append(output)
            )
            # ultralytics' predictor runs a deep copy of the network made at its setup: one set up
            # before the hook existed would never call it, so it is set up again.
            self.model.predictor = None
        return True

    def _pooled_features(self, count: int) -> np.ndarray | None:
        """The forward pass(es) since ``score`` started, pooled and L2-normalized."""
        if self._hook is None or not self._features:
            return None
        import torch

        pooled = torch.cat([f.float().mean(dim=(2, 3)) for f in self._features], dim=0)[-count:]
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled.detach().cpu().numpy().astype(np.float32)

    # -- export ----------------------------------------------------------------------------------
    def torch_module(self, device: str = "cpu") -> torch.nn.Module:
        """The fused eval-mode DetectionModel, as ultralytics runs it (and as the exporter traced it)."""
        return copy.deepcopy(self.model.model).fuse().float().eval().to(device)

    def export(self, options: ExportOptions, out: Path, *, calibration: Path | None = None) -> Path:
        from autolabel.students.yolo_export import export_variant

        return export_variant(self.source, options, out, calibration=calibration)

    def raw_input(self, rgb: np.ndarray, imgsz: int) -> np.ndarray:
        from autolabel.students.yolo_export import letterbox

        return letterbox(rgb, imgsz)

    def raw_diff(self, reference: Sequence[np.ndarray], exported: Sequence[np.ndarray]) -> RawDiff:
        from autolabel.students.yolo_export import raw_output_diff

        overall, scores = raw_output_diff(reference[:1], exported[:1])
        return RawDiff(overall=overall, scores=scores)


def names_list(names) -> list[str]:
    """Ultralytics keeps names as {index: name} (or its string form in metadata); ours are lists."""
    import ast

    if isinstance(names, str):
        names = ast.literal_eval(names)
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def weights_dir() -> Path:
    """Where ultralytics keeps (and fetches) official weights: its settings' ``weights_dir``."""
    configure_ultralytics()
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["weights_dir"])


# -- model choice ---------------------------------------------------------------------------
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


# -- training helpers -----------------------------------------------------------------------
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


# -- inference helpers ----------------------------------------------------------------------
def _bgr(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    # ultralytics treats numpy input as OpenCV BGR
    return [np.ascontiguousarray(image[..., ::-1]) for image in images]


def _to_detections(result):
    """An ultralytics Results -> sv.Detections carrying ``class_probs`` when the predictor kept them."""
    import supervision as sv

    from autolabel.sampling.uncertainty import CLASS_PROBS_KEY

    det = sv.Detections.from_ultralytics(result)
    det.data = {}  # drop class_name strings: ids are the ontology's
    probs = getattr(result, "class_probs", None)
    if probs is not None and len(probs) == len(det):
        det.data[CLASS_PROBS_KEY] = probs
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


__all__: Sequence[str] = ("YoloStudent", "names_list", "resolve_model", "weights_dir")
