"""OWLv2 through transformers (default ``google/owlv2-base-patch16-ensemble``).

Every prompt of the ontology is one text query. For each predicted box::

    class score[c] = max over class c's prompts of sigmoid(logit[box, prompt])
    class          = argmax_c class score[c];   confidence = class score[class]

The processor pads each image to a square (bottom/right) before resizing it, so ``pred_boxes`` are
normalized to that padded square: they map back to the original pixels by ``max(h, w)`` on both
axes, not by (w, h). Every image becomes the same square input, so batches need no extra padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel.proposers import hf_weights
from autolabel.proposers.base import FinalizeOptions, ProposerSettings, StagedProposer, finalize

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.ontology import Ontology

DEFAULT_MODEL_ID = "google/owlv2-base-patch16-ensemble"
NAME = "owlv2"


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
        self.text_inputs = processor.tokenizer(
            [prompt.lower() for prompt, _ in table],
            padding="max_length",
            truncation=True,
            max_length=model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        )
        self.image_kwargs: dict[str, Any] = {}
        self.interpolate = False
        if settings.max_side and settings.max_side != model.config.vision_config.image_size:
            self.image_kwargs["size"] = {"height": settings.max_side, "width": settings.max_side}
            self.interpolate = True

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        return self.processor.image_processor(images=list(images), return_tensors="pt", **self.image_kwargs)[
            "pixel_values"
        ]

    def forward(self, pixel_values: Any) -> list[Owlv2Output]:
        import torch

        batch = pixel_values.shape[0]
        with torch.inference_mode():
            result = self.model(
                pixel_values=pixel_values.to(self.device, self.dtype),
                input_ids=self.text_inputs["input_ids"].to(self.device).repeat(batch, 1),
                attention_mask=self.text_inputs["attention_mask"].to(self.device).repeat(batch, 1),
                interpolate_pos_encoding=self.interpolate,
            )
        logits = result.logits.float().cpu().numpy()
        boxes = result.pred_boxes.float().cpu().numpy()
        return [Owlv2Output(logits=logits[row], boxes=boxes[row]) for row in range(batch)]

    def postprocess_one(self, output: Owlv2Output, *, width: int, height: int) -> sv.Detections:
        return detections_from_output(
            output,
            self.prompt_classes,
            self.finalize_options,
            size=(height, width),
            num_classes=len(self.ontology.classes),
        )
