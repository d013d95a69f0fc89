"""``yolo-world``: Ultralytics YOLO-World (or YOLOE) prompted with the ontology's text prompts.

Each prompt becomes one detector class; the detector's class index is a prompt index, which
``postprocess`` maps back to the ontology class owning that prompt.

Prompt embeddings. ``set_classes`` encodes prompts with CLIP (YOLO-World) or MobileCLIP (YOLOE),
whose weights come from the network on first use. Offline, give precomputed embeddings instead:
an ``.npz`` with ``names`` (1-D strings: the prompts) and ``embeddings`` (float, ``(1, n, D)`` or
``(n, D)``), the layout ``YOLOE.save_prompt_embeddings`` writes. It is found next to the weights as
``<weights stem>.prompts.npz`` (e.g. ``yoloe-v8s.pt`` -> ``yoloe-v8s.prompts.npz``) or passed as
``YoloWorldProposer(..., prompt_embeddings=path)``. Rows are looked up by normalized prompt, so one
file can serve several ontologies. ``save_prompt_embeddings`` writes such a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError, first_line
from autolabel.ontology import normalize_prompt
from autolabel.proposers.base import FinalizeOptions, StagedProposer, finalize

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.ontology import Ontology
    from autolabel.proposers.base import ProposerSettings

DEFAULT_WEIGHTS = "yolov8s-worldv2.pt"
DEFAULT_IMGSZ = 640
# Several prompts of one class may box the same object; same-class boxes overlapping this much merge.
SYNONYM_MERGE_IOU = 0.7
EMBEDDINGS_SUFFIX = ".prompts.npz"


@dataclass(frozen=True)
class RawDetections:
    """One image's detector output: pixel xyxy, score and prompt index per box."""

    xyxy: np.ndarray  # (n, 4) float
    scores: np.ndarray  # (n,) float
    prompt_index: np.ndarray  # (n,) int


def embeddings_path_for(weights: str | Path) -> Path:
    weights = Path(weights)
    return weights.with_name(weights.stem + EMBEDDINGS_SUFFIX)


def save_prompt_embeddings(path: str | Path, prompts: Sequence[str], embeddings) -> Path:
    """Write prompt embeddings (``(n, D)`` or ``(1, n, D)``) in the layout this backend reads."""
    if hasattr(embeddings, "detach"):  # a torch tensor
        embeddings = embeddings.detach().cpu().numpy()
    array = np.asarray(embeddings, dtype=np.float32)
    array = array.reshape(1, len(prompts), -1)
    path = Path(path)
    np.savez_compressed(path, names=np.asarray(list(prompts), dtype=np.str_), embeddings=array)
    return path


def load_prompt_embeddings(path: str | Path, prompts: Sequence[str]) -> np.ndarray:
    """The ``(1, len(prompts), D)`` float32 rows for ``prompts`` from an embeddings file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            names, embeddings = data["names"], data["embeddings"]
    except (OSError, KeyError, ValueError) as exc:
        raise AutolabelError(
            f"{path}: not a prompt-embeddings .npz with 'names' and 'embeddings' ({exc})"
        ) from None
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim == 3 and embeddings.shape[0] == 1:
        embeddings = embeddings[0]
    if embeddings.ndim != 2 or names.ndim != 1 or embeddings.shape[0] != len(names):
        raise AutolabelError(
            f"{path}: expected names (n,) and embeddings (n, D), got {names.shape} and {embeddings.shape}"
        )
    rows = {normalize_prompt(str(n)): i for i, n in enumerate(names.tolist())}
    missing = [p for p in prompts if normalize_prompt(p) not in rows]
    if missing:
        raise AutolabelError(
            f"{path}: no embeddings for prompts {missing}; recompute them with these prompts"
        )
    return embeddings[[rows[normalize_prompt(p)] for p in prompts]][None]


class YoloWorldProposer(StagedProposer):
    def __init__(
        self,
        settings: ProposerSettings,
        ontology: Ontology,
        *,
        prompt_embeddings: str | Path | None = None,
    ):
        from autolabel.runtime import configure_ultralytics, resolve_device

        self.settings = settings
        self.ontology = ontology
        table = ontology.prompt_table()
        self.prompts = [prompt for prompt, _ in table]
        self.prompt_classes = np.asarray([class_index for _, class_index in table], dtype=int)
        self.finalize_options = FinalizeOptions.from_settings(settings, ontology)
        self.device = resolve_device(settings.device)
        self.half = bool(settings.fp16 and self.device.startswith("cuda"))
        self.imgsz = settings.max_side or DEFAULT_IMGSZ
        weights = settings.model_path or DEFAULT_WEIGHTS
        configure_ultralytics()
        self.model = _load_model(weights)
        embeddings_file = Path(prompt_embeddings) if prompt_embeddings else embeddings_path_for(weights)
        if prompt_embeddings and not embeddings_file.is_file():
            raise AutolabelError(f"prompt embeddings file not found: {embeddings_file}")
        embeddings = None
        if embeddings_file.is_file():
            embeddings = load_prompt_embeddings(embeddings_file, self.prompts)
        _set_prompts(self.model, self.prompts, embeddings, weights, embeddings_file)
        self.model_version = f"yolo-world:{Path(weights).name}"

    def preprocess(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        # Ultralytics treats numpy arrays as BGR (OpenCV's order).
        return [np.ascontiguousarray(image[..., ::-1]) for image in images]

    def forward(self, inputs: list[np.ndarray]) -> list[RawDetections]:
        results = self.model.predict(
            inputs,
            conf=float(min(self.finalize_options.thresholds)),
            iou=SYNONYM_MERGE_IOU,
            imgsz=self.imgsz,
            max_det=max(self.settings.max_det, 1) * 3,
            device=self.device,
            half=self.half,
            verbose=False,
        )
        out = []
        for result in results:
            boxes = result.boxes
            out.append(
                RawDetections(
                    xyxy=boxes.xyxy.cpu().numpy().astype(np.float32),
                    scores=boxes.conf.cpu().numpy().astype(np.float32),
                    prompt_index=boxes.cls.cpu().numpy().astype(int),
                )
            )
        return out

    def postprocess_one(self, output: RawDetections, *, width: int, height: int) -> sv.Detections:
        return raw_to_detections(
            output, self.prompt_classes, self.finalize_options, width=width, height=height
        )


def raw_to_detections(
    raw: RawDetections,
    prompt_classes: np.ndarray,
    options: FinalizeOptions,
    *,
    width: int,
    height: int,
) -> sv.Detections:
    """Pure: prompt indices -> ontology classes, merge synonym duplicates, then the common tail."""
    from autolabel import detections as dets

    if len(raw.scores) == 0:
        return dets.empty()
    det = dets.make(raw.xyxy, np.asarray(prompt_classes)[raw.prompt_index], raw.scores)
    if len(det) > 1 and len(set(prompt_classes.tolist())) < len(prompt_classes):
        det = det.with_nms(threshold=SYNONYM_MERGE_IOU, class_agnostic=False)
    return finalize(det, options, width=width, height=height)


def _load_model(weights: str):
    """YOLOE for 'yoloe*' weights/configs, YOLO-World otherwise; a missing file is one line."""
    name = Path(weights).name.lower()
    is_config = name.endswith((".yaml", ".yml"))
    if not is_config and Path(weights).parent != Path(".") and not Path(weights).is_file():
        raise AutolabelError(f"--model-path {weights}: file not found")
    from ultralytics import YOLOE, YOLOWorld

    cls = YOLOE if name.startswith("yoloe") else YOLOWorld
    try:
        return cls(weights)
    except (ConnectionError, FileNotFoundError) as exc:
        raise AutolabelError(
            f"yolo-world weights '{weights}' are not available offline ({first_line(exc)}): "
            "download them once (e.g. from https://github.com/ultralytics/assets/releases) and pass "
            "--model-path /path/to/weights.pt"
        ) from None


def _set_prompts(
    model, prompts: list[str], embeddings: np.ndarray | None, weights: str, embeddings_file: Path
) -> None:
    import torch
    from ultralytics import YOLOE

    try:
        if embeddings is None:
            model.set_classes(prompts)
            return
        expected = getattr(model.model.model[-1], "embed", None) or model.model.txt_feats.shape[-1]
        if embeddings.shape[-1] != expected:
            raise AutolabelError(
                f"{embeddings_file}: embeddings have {embeddings.shape[-1]} dimensions, "
                f"'{weights}' expects {expected}"
            )
        tensor = torch.from_numpy(embeddings).to(next(model.model.parameters()).device)
        if isinstance(model, YOLOE):
            model.set_classes(prompts, tensor)
        else:
            # YOLOWorld.set_classes always runs CLIP; this is the rest of what it does.
            model.model.txt_feats = tensor
            model.model.model[-1].nc = len(prompts)
            model.model.names = list(prompts)
            model.predictor = None
    except (ImportError, ConnectionError, FileNotFoundError, OSError) as exc:
        raise AutolabelError(
            f"encoding prompts for '{weights}' needs the CLIP text model, unavailable here "
            f"({first_line(exc)}): install it and its weights when online, or put precomputed "
            f"prompt embeddings at {embeddings_file}"
        ) from None
