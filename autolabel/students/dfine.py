"""The D-FINE student (Apache-2.0 code and weights): transformers' ``DFineForObjectDetection``.

Weights are a ``save_pretrained`` folder; a student's weights *file* is that folder's
``model.safetensors`` (next to its ``config.json``), so runs, the student proposer and the pool
scorer hold one file as they do for YOLO. ``choose`` finds what a run starts from:

* a ``.json`` model config (``DFineConfig``): random init, for tests and from-scratch runs;
* a path: a ``save_pretrained`` folder or its ``model.safetensors``;
* a hub id (``ustc-community/dfine-nano-coco`` for ``--student dfine-n``): the Hugging Face cache,
  or the hub when online and not ``--offline``; otherwise one ``AutolabelError`` line.

The class head is rebuilt for the dataset's classes at ``fit`` (COCO weights have 80). Inputs are
resized to imgsz x imgsz and scaled to [0, 1] (D-FINE's processor: no mean/std normalization);
outputs are decoded as D-FINE does (sigmoid scores, top-k over queries x classes, no NMS), keeping
each box's per-class sigmoid scores for the uncertainty scores. Embeddings: each encoder output
level global-average-pooled, concatenated and L2-normalized.

Export (``dfine_onnx``): fp32 ONNX with the raw outputs; ``load`` of that ``.onnx`` gives a student
that predicts and scores through ONNX Runtime with the same preprocessing and decode (no
embeddings). An export folder keeps the PyTorch reference as a ``model/`` save_pretrained folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError, first_line
from autolabel.students.base import FitResult, ModelChoice, RawBoxes, RawDiff, ScoredImage

if TYPE_CHECKING:
    import torch

    from autolabel.exported.options import ExportOptions
    from autolabel.students.base import FitSettings

WEIGHTS_FILE = "model.safetensors"
CODE_LICENSE = "Apache-2.0"
APACHE_CHECKPOINTS = ("ustc-community/",)  # the D-FINE checkpoints on the hub, Apache-2.0


class DFineStudent:
    """A ``DFineForObjectDetection`` (built lazily for training, when the classes are known)."""

    backend = "dfine"
    reference_name = f"model/{WEIGHTS_FILE}"
    preprocessing = "resized, no letterbox, /255"

    def __init__(self, model, source: str | Path, *, pretrained: bool = True, runner=None):
        self.model = model  # DFineForObjectDetection, or None until fit builds it (or when exported)
        self.source = Path(str(source))
        self.pretrained = pretrained
        self.runner = runner  # dfine_onnx.OnnxRunner for an exported file, else None

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def choose(cls, model: str, *, resume_from: str | None = None, download: bool = True) -> ModelChoice:
        if resume_from is not None:
            path = Path(resume_from)
            if not path.is_file():
                raise AutolabelError(f"--resume-from {resume_from}: file not found")
            return ModelChoice(str(path.resolve()), pretrained=True)
        return resolve_model(model, download=download)

    @classmethod
    def start(cls, choice: ModelChoice) -> DFineStudent:
        return cls(None, choice.source, pretrained=choice.pretrained)

    @classmethod
    def load(cls, weights: str | Path) -> DFineStudent:
        path = Path(str(weights))
        if path.suffix == ".onnx":
            from autolabel.students.dfine_onnx import OnnxRunner

            if not path.is_file():
                raise AutolabelError(f"D-FINE ONNX file not found: {path}")
            return cls(None, path, runner=OnnxRunner(path))
        return cls(build_model(path).eval(), path)

    @classmethod
    def copy_reference(cls, weights: Path, out_dir: Path) -> Path:
        """The weights' save_pretrained folder (its config and safetensors) as ``out_dir/model/``."""
        import shutil

        weights = Path(weights)
        if not weights.is_file() or not (weights.parent / "config.json").is_file():
            raise AutolabelError(f"{weights}: not a D-FINE save_pretrained folder's weights")
        reference = out_dir / cls.reference_name
        reference.parent.mkdir(parents=True, exist_ok=True)
        for file in weights.parent.iterdir():
            target = reference.parent / file.name
            wanted = file.suffix in (".json", ".safetensors") and file.is_file()
            if wanted and not (target.exists() and file.samefile(target)):
                shutil.copyfile(file, target)
        return reference

    @classmethod
    def check_export(cls, options: ExportOptions) -> None:
        asked = [
            flag
            for flag, on in (
                (f"--format {options.format}", options.format != "onnx"),
                ("--half", options.half),
                ("--int8", options.int8),
                ("--nms", options.nms),
            )
            if on
        ]
        if asked:
            raise AutolabelError(
                f"{', '.join(asked)}: not supported for the dfine student (it exports fp32 ONNX:"
                " --format onnx, optionally --dynamic for a dynamic batch)"
            )

    @classmethod
    def license_note(cls, *, model: str | None, pretrained: bool) -> str:
        code = (
            "The student is a D-FINE detector run by Hugging Face transformers (DFineForObjectDetection):"
            " the code is licensed Apache-2.0."
        )
        if not pretrained:
            return f"{code} It was trained from a config with random initialization: no third-party weights."
        if model and model.startswith(APACHE_CHECKPOINTS):
            return f"{code} It was fine-tuned from {model}, whose weights are licensed Apache-2.0."
        return (
            f"{code} It was fine-tuned from {model or 'pretrained weights'}: the ustc-community D-FINE"
            " checkpoints are Apache-2.0; check the license of any other checkpoint."
        )

    @property
    def class_names(self) -> list[str]:
        if self.runner is not None:
            return list(self.runner.class_names)
        config = self.model.config if self.model is not None else read_config(self.source)
        labels = config.id2label
        return [str(labels[k]) for k in sorted(labels, key=int)]

    @property
    def can_embed(self) -> bool:
        return self.runner is None

    # -- training --------------------------------------------------------------------------------
    def fit(self, data_yaml: Path, settings: FitSettings, run_dir: Path, device: str) -> FitResult:
        import torch

        from autolabel.students.dfine_fit import dataset_split, fit_model

        names, _ = dataset_split(data_yaml, "train")
        torch.manual_seed(settings.seed)  # a random init (config json) or a new class head follows the seed
        self.model = build_model(self.source, class_names=names)
        check_size(self.model.config, settings.imgsz)
        weights, metrics, seconds = fit_model(self.model, data_yaml, settings, run_dir, device)
        self.model.eval()
        return FitResult(weights=weights, metrics=metrics, epoch_seconds=seconds)

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
        # D-FINE always sees imgsz x imgsz (``square`` is its only mode) and needs no NMS (``iou``).
        logits, boxes, _ = self._forward(images, imgsz=imgsz, device=device, embed=False)
        return [
            decode(logits[i], boxes[i], image.shape[1], image.shape[0], conf=conf, max_det=max_det)[0]
            for i, image in enumerate(images)
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
        import supervision as sv

        from autolabel.sampling.uncertainty import CLASS_PROBS_KEY

        logits, boxes, features = self._forward(images, imgsz=imgsz, device=device, embed=embed)
        out = []
        for i, image in enumerate(images):
            raw, probs = decode(
                logits[i], boxes[i], image.shape[1], image.shape[0], conf=conf, max_det=max_det
            )
            det = sv.Detections(xyxy=raw.xyxy, confidence=raw.confidence, class_id=raw.class_id)
            det.data = {CLASS_PROBS_KEY: probs}
            out.append(ScoredImage(detections=det, embedding=features[i] if features is not None else None))
        return out

    def embed(self, images: Sequence[np.ndarray], *, imgsz: int, device: str) -> np.ndarray | None:
        if not images:
            return None
        return self._forward(images, imgsz=imgsz, device=device, embed=True)[2]

    def _forward(self, images: Sequence[np.ndarray], *, imgsz: int, device: str, embed: bool):
        """(logits (B, Q, C), boxes (B, Q, 4) normalized cxcywh, pooled features or None) as numpy."""
        import torch

        from autolabel.students.dfine_fit import to_tensor

        if self.runner is not None:  # an exported file: no backbone features to pool
            logits, boxes = self.runner(to_tensor(images, imgsz).numpy())
            return logits.astype(np.float32), boxes.astype(np.float32), None
        check_size(self.model.config, imgsz)
        model = self.model.to(device).eval()
        with torch.no_grad():
            out = model(pixel_values=to_tensor(images, imgsz).to(device))
        features = None
        if embed:
            pooled = torch.cat(
                [level.float().mean(dim=(2, 3)) for level in out.encoder_last_hidden_state], dim=1
            )
            features = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy().astype(np.float32)
        return out.logits.float().cpu().numpy(), out.pred_boxes.float().cpu().numpy(), features

    # -- export ----------------------------------------------------------------------------------
    def torch_module(self, device: str = "cpu") -> torch.nn.Module:
        """The eval-mode network returning (logits, pred_boxes): what the ONNX export traces."""
        import torch

        if self.model is None:
            raise AutolabelError(
                f"{self.source.name}: no PyTorch network (an exported file or an unfitted student)"
            )

        class Raw(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, pixel_values):
                out = self.model(pixel_values=pixel_values)
                return out.logits, out.pred_boxes

        return Raw(self.model).eval().to(device)

    def export(self, options: ExportOptions, out: Path, *, calibration: Path | None = None) -> Path:
        from autolabel.students.dfine_onnx import export_onnx

        self.check_export(options)
        check_size(self.model.config, options.imgsz)
        return export_onnx(self.torch_module("cpu"), self.class_names, options, out)

    def raw_input(self, rgb: np.ndarray, imgsz: int) -> np.ndarray:
        from autolabel.students.dfine_fit import to_tensor

        return to_tensor([rgb], imgsz).numpy().astype(np.float32)

    def raw_diff(self, reference: Sequence[np.ndarray], exported: Sequence[np.ndarray]) -> RawDiff:
        from autolabel.students.dfine_onnx import raw_diff

        return raw_diff(reference, exported)


# -- decoding -------------------------------------------------------------------------------
def decode(
    logits: np.ndarray, boxes: np.ndarray, width: int, height: int, *, conf: float, max_det: int
) -> tuple[RawBoxes, np.ndarray]:
    """One image's queries -> boxes in its pixels and each box's per-class scores (D-FINE's top-k
    over queries x classes, then the confidence threshold)."""
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))  # (Q, C)
    num_classes = probs.shape[1]
    flat = probs.reshape(-1)
    k = min(max_det, flat.size)
    top = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    top = top[np.argsort(-flat[top], kind="stable")]
    top = top[flat[top] >= conf]
    query, class_id = top // num_classes, top % num_classes
    cx, cy, w, h = boxes[query].T
    xyxy = np.stack(
        [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1
    )
    xyxy = xyxy.reshape(-1, 4).clip(0, [width, height, width, height]).astype(np.float32)
    raw = RawBoxes(xyxy=xyxy, confidence=flat[top].astype(np.float32), class_id=class_id.astype(int))
    return raw, probs[query].astype(np.float32).reshape(-1, num_classes)


def check_size(config, imgsz: int) -> None:
    """D-FINE picks ``num_queries`` of the encoder's anchors: a too small input has fewer."""
    anchors = sum((imgsz // stride) ** 2 for stride in config.feat_strides)
    if anchors < config.num_queries:
        raise AutolabelError(
            f"--imgsz {imgsz} is too small for this D-FINE: {anchors} anchors for {config.num_queries} queries"
        )


# -- model choice and building --------------------------------------------------------------
def resolve_model(model: str, *, download: bool = True) -> ModelChoice:
    """A config json (random init), a local folder or weights file, or a hub id (cache, then hub)."""
    path = Path(model).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise AutolabelError(f"--model {model}: file not found")
        return ModelChoice(str(path.resolve()), pretrained=False)
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        return ModelChoice(str((path / WEIGHTS_FILE).resolve()), pretrained=True)
    if path.is_file():
        return ModelChoice(str(path.resolve()), pretrained=True)
    if model.count("/") != 1 or path.exists():
        raise AutolabelError(
            f"--model {model}: no D-FINE weights there (a save_pretrained folder or a hub id)"
        )
    return ModelChoice(str(hub_weights(model, download=download)), pretrained=True)


def hub_weights(model_id: str, *, download: bool) -> Path:
    """``model.safetensors`` of ``model_id`` from the HF cache, else from the hub when allowed."""
    from huggingface_hub import snapshot_download

    from autolabel.proposers.hf_weights import hub_url, missing_weights_error, offline_mode, reachable
    from autolabel.runtime import offline_requested

    patterns = ["*.json", "*.safetensors"]
    cached = _cached_snapshot(model_id, patterns)
    if cached is not None:
        return cached / WEIGHTS_FILE
    if not download or offline_requested() or offline_mode():
        raise missing_weights_error(model_id, "offline mode is on")
    url = hub_url(model_id)
    if not reachable(url, 3.0):
        raise missing_weights_error(model_id, f"the hub is unreachable ({url.split('/api/')[0]})")
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns)) / WEIGHTS_FILE
    except Exception as exc:  # noqa: BLE001
        raise AutolabelError(f"could not download '{model_id}': {first_line(exc)}") from None


def _cached_snapshot(model_id: str, patterns: list[str]) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache: huggingface_hub's error types vary by version
        return None


def read_config(source: Path):
    from transformers import DFineConfig

    config_path = source if source.suffix == ".json" else source.parent / "config.json"
    if not config_path.is_file():
        raise AutolabelError(f"{source}: no D-FINE config.json next to it")
    try:
        return DFineConfig.from_json_file(str(config_path))
    except (OSError, ValueError, TypeError) as exc:
        raise AutolabelError(f"{config_path}: not a D-FINE config ({exc})") from None


def build_model(source: Path, *, class_names: list[str] | None = None):
    """The model from a config json (random init) or a weights file; ``class_names`` resets the
    class head to those classes when they differ from the checkpoint's."""
    from transformers import DFineForObjectDetection
    from transformers.utils import logging as hf_logging

    config = read_config(source)
    labels = None
    if class_names is not None:
        labels = {
            "id2label": dict(enumerate(class_names)),
            "label2id": {n: i for i, n in enumerate(class_names)},
        }
        same = [config.id2label.get(i) for i in range(len(config.id2label))] == list(class_names)
        if same:
            labels = None
    hf_logging.disable_progress_bar()  # the weight-loading bar; ours show the work
    if source.suffix == ".json":
        if labels:
            config.num_labels = len(class_names)
            config.id2label, config.label2id = labels["id2label"], labels["label2id"]
        return DFineForObjectDetection(config)
    if not source.is_file():
        raise AutolabelError(f"D-FINE weights not found: {source}")
    extra = {"num_labels": len(class_names), **labels, "ignore_mismatched_sizes": True} if labels else {}
    return DFineForObjectDetection.from_pretrained(str(source.parent), local_files_only=True, **extra)


__all__: Sequence[str] = ("DFineStudent", "build_model", "decode", "resolve_model")
