"""OWLv2 through transformers (default ``google/owlv2-base-patch16-ensemble``).

Every prompt of the ontology is one text query. For each predicted box::

    class score[c] = max over class c's prompts of sigmoid(logit[box, prompt])
    class          = argmax_c class score[c];   confidence = class score[class]

The processor pads each image to a square (bottom/right) before resizing it, so ``pred_boxes`` are
normalized to that padded square: they map back to the original pixels by ``max(h, w)`` on both
axes, not by (w, h). Every image becomes the same square input, so batches need no extra padding.

The prompts are encoded once per ontology (``owlv2_sides.text_queries``); each batch runs only the
image side, in PyTorch or (``runtime: onnx | openvino | auto``, ``runtime_select``) as an export of
it. The export has a fixed input size, the processor's square (``max_side`` when set, else the
model's ``image_size``), with dynamic batch and prompt count; it is cached (``runtime_cache``) and
used only when it passes parity against PyTorch at export time (``PARITY_*`` tolerances), else the
proposer prints why and runs PyTorch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel.proposers import hf_weights
from autolabel.proposers.base import FinalizeOptions, ProposerSettings, StagedProposer, finalize
from autolabel.proposers.owlv2_sides import image_side_module, text_queries
from autolabel.proposers.runtime_parity import PARITY_SHAPES, Tolerance, export_parity, parity_images
from autolabel.proposers.runtime_select import select_runtime
from autolabel.proposers.torch_speed import gpu_preprocessing, maybe_compile

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.ontology import Ontology

DEFAULT_MODEL_ID = "google/owlv2-base-patch16-ensemble"
NAME = "owlv2"

# Export-time parity against PyTorch: raw outputs, then the detections at the configured thresholds.
# (runtime_parity: per query, atol + rtol * max |PyTorch output|; then detections at IoU 0.9)
PARITY_LOGIT_ATOL = 1e-3
PARITY_LOGIT_RTOL = 1e-4
PARITY_BOX_ATOL = 1e-3  # normalized coordinates
PARITY_SCORE_ATOL = 1e-3


@dataclass(frozen=True)
class Owlv2Output:
    """One image's raw output: logits (boxes, prompts) and boxes (boxes, 4) cxcywh in the padded square."""

    logits: np.ndarray
    boxes: np.ndarray


def class_scores(logits: np.ndarray, prompt_classes: Sequence[int], num_classes: int) -> np.ndarray:
    """(boxes, prompts) logits -> (boxes, classes) scores: max sigmoid over each class's prompts."""
    prompt_classes = np.asarray(prompt_classes)
    probs = 1.0 / (1.0 + np.exp(-logits[:, : len(prompt_classes)].astype(np.float64)))
    scores = np.zeros((probs.shape[0], num_classes), dtype=np.float64)
    for class_index in range(num_classes):
        columns = prompt_classes == class_index
        if columns.any():
            scores[:, class_index] = probs[:, columns].max(axis=1)
    return scores


def padded_square_to_pixels(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cxcywh normalized to the bottom/right-padded square -> xyxy pixels of the (h, w) image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = boxes.T
    side = max(size)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * side


def detections_from_output(
    output: Owlv2Output,
    prompt_classes: Sequence[int],
    options: FinalizeOptions,
    *,
    size: tuple[int, int],
    num_classes: int,
) -> sv.Detections:
    """One image's raw output -> detections in its pixels. Pure."""
    from autolabel import detections as dets

    scores = class_scores(output.logits, prompt_classes, num_classes)
    best = scores.argmax(axis=1)
    confidence = scores[np.arange(len(best)), best]
    keep = confidence >= min(options.thresholds)  # cheap pre-filter; finalize applies each class's own
    det = dets.make(padded_square_to_pixels(output.boxes[keep], size), best[keep], confidence[keep])
    height, width = size
    return finalize(det, options, width=width, height=height)


def torch_float32() -> Any:
    import torch

    return torch.float32


class Owlv2Proposer(StagedProposer):
    """OWLv2 zero-shot detector; see the module docstring for the class and box rules."""

    def __init__(self, settings: ProposerSettings, ontology: Ontology):
        loaded = hf_weights.ZeroShotDetector(
            settings, name=NAME, model_id=DEFAULT_MODEL_ID, model_type="owlv2"
        )
        self.settings = settings
        self.ontology = ontology
        self.device, self.dtype = loaded.device, loaded.dtype
        self.processor, self.model = processor, model = loaded.processor, loaded.model
        self.model_version = loaded.model_version
        self.finalize_options = FinalizeOptions.from_settings(settings, ontology)
        table = ontology.prompt_table()
        self.prompt_classes = [class_index for _, class_index in table]
        self.text_inputs = text_inputs = processor.tokenizer(
            [prompt.lower() for prompt, _ in table],
            padding="max_length",
            truncation=True,
            max_length=model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        )
        self.queries = text_queries(
            model, text_inputs["input_ids"].to(self.device), text_inputs["attention_mask"].to(self.device)
        )
        self.image_kwargs: dict[str, Any] = {}
        self.interpolate = False
        if settings.max_side and settings.max_side != model.config.vision_config.image_size:
            self.image_kwargs["size"] = {"height": settings.max_side, "width": settings.max_side}
            self.interpolate = True
        self.image_kwargs.update(gpu_preprocessing(self.device))
        self.image_side = image_side_module(model, interpolate=self.interpolate)
        self.session = None  # the exported graph the image side runs in (None: PyTorch)
        self.selection = select_runtime(
            name=NAME,
            asked=settings.runtime,
            device=self.device,
            cpu_fp32=self.device == "cpu" and self.dtype == torch_float32(),
            make_spec=self.export_spec,
            parity=lambda graph: self.parity(graph, self.parity_pixels),
            run_torch=lambda: self.run_image_side(self.parity_pixels, session=None),
            run_graph=lambda graph: self.run_image_side(self.parity_pixels, session=graph),
        )
        self.runtime = self.selection.cached  # runtime_cache.CachedRuntime of the export used or tried
        self.session = self.selection.graph
        if self.session is None:
            self.image_side = maybe_compile(self.image_side, settings, self.device)

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        return self.processor.image_processor(images=list(images), return_tensors="pt", **self.image_kwargs)[
            "pixel_values"
        ]

    def forward(self, pixel_values: Any) -> list[Owlv2Output]:
        logits, boxes = self.run_image_side(pixel_values)
        return [Owlv2Output(logits=logits[row], boxes=boxes[row]) for row in range(len(logits))]

    def run_image_side(self, pixel_values: Any, *, session: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(logits, boxes) as float32 numpy for a batch, through ``session`` (ONNX) or PyTorch."""
        import torch

        session = session if session is not None else self.session
        if session is not None:
            logits, boxes = session.run(
                {
                    "pixel_values": pixel_values.float().numpy(),
                    "query_embeds": self.queries.embeds.float().cpu().numpy(),
                    "query_mask": self.queries.mask.cpu().numpy(),
                }
            )
            return np.asarray(logits, dtype=np.float32), np.asarray(boxes, dtype=np.float32)
        with torch.inference_mode():
            logits, boxes = self.image_side(
                pixel_values.to(self.device, self.dtype), self.queries.embeds, self.queries.mask
            )
        return logits.float().cpu().numpy(), boxes.float().cpu().numpy()

    @functools.cached_property
    def parity_pixels(self) -> Any:
        return self.preprocess(parity_images())

    def export_spec(self) -> Any:
        from autolabel.proposers.runtime_cache import ExportSpec

        pixels = self.parity_pixels
        return ExportSpec(
            name=NAME,
            source=str(self.settings.model_path or DEFAULT_MODEL_ID),
            input_size=(int(pixels.shape[-2]), int(pixels.shape[-1])),
            module=self.image_side,
            example_inputs=(pixels, self.queries.embeds, self.queries.mask),
            input_names=("pixel_values", "query_embeds", "query_mask"),
            output_names=("logits", "boxes"),
            dynamic_axes={
                "pixel_values": {0: "batch"},
                "query_embeds": {1: "queries"},
                "query_mask": {1: "queries"},
                "logits": {0: "batch", 2: "queries"},
                "boxes": {0: "batch"},
            },
            settings={
                "interpolate": self.interpolate,
                "parity": [PARITY_LOGIT_ATOL, PARITY_LOGIT_RTOL, PARITY_BOX_ATOL, PARITY_SCORE_ATOL],
            },
        )

    def parity(self, session: Any, pixels: Any) -> tuple[str | None, dict]:
        """The export vs PyTorch on the parity images: raw outputs, then detections after postprocess."""
        tolerances = {
            "logits": Tolerance(PARITY_LOGIT_ATOL, PARITY_LOGIT_RTOL),
            "boxes": Tolerance(PARITY_BOX_ATOL),
        }

        def detections_of(outputs):
            logits, boxes = outputs
            return [
                self.postprocess_one(
                    Owlv2Output(logits=logits[row], boxes=boxes[row]), width=width, height=height
                )
                for row, (height, width) in enumerate(PARITY_SHAPES)
            ]

        expected = self.run_image_side(pixels, session=None)
        got = self.run_image_side(pixels, session=session)
        return export_parity(expected, got, tolerances, detections_of, score_atol=PARITY_SCORE_ATOL)

    def postprocess_one(self, output: Owlv2Output, *, width: int, height: int) -> sv.Detections:
        return detections_from_output(
            output,
            self.prompt_classes,
            self.finalize_options,
            size=(height, width),
            num_classes=len(self.ontology.classes),
        )
