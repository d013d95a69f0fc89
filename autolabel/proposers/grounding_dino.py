"""Grounding DINO through transformers (default ``IDEA-Research/grounding-dino-tiny``).

Class mapping: the caption is every prompt of the ontology, lowercased, as ``"a . b . c ."``. We never
map transformers' decoded phrase strings back to classes (a phrase like "hex" is ambiguous between
"hex nut" and "hex bolt", and sub-word joins produce strings that match no prompt). Instead each prompt's
character span in the caption is mapped to token positions with the fast tokenizer's offset mapping;
a token belongs to the class of the prompt whose span contains it. For each query (box)::

    class score[c] = max over tokens t of class c's prompts of sigmoid(logit[query, t])
    class          = argmax_c class score[c];   confidence = class score[class]
    kept when        confidence >= the class's box threshold and confidence >= text_threshold

A caption longer than the text encoder's ``max_text_len`` tokens is split into several captions
(whole prompts each); each one gets its own forward pass and the detections are merged.

Batches: the image processor pads a batch to its largest image (bottom/right) with a pixel mask, but
a padded image does not give the same boxes as the image alone (Swin windows see the padding, and the
valid-region ratios come from a nearest-neighbour downsampled mask). So images are grouped by their
resized shape and each group runs unpadded; ``pred_boxes`` are then normalized (cx, cy, w, h) over the
whole resized image, which is the original image scaled, and map back with the original (w, h).

The text backbone (BERT) runs once per caption, not per batch (``grounding_dino_text``).

``runtime: onnx | openvino | auto`` (``runtime_select``): one fixed-shape export per caption, and
a fixed image-size rule (longer side resized to S, padded bottom/right to S x S, a pixel mask over
the real image, boxes back in original pixels): see ``grounding_dino_export``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.proposers import grounding_dino_export as export
from autolabel.proposers import hf_weights
from autolabel.proposers.base import FinalizeOptions, ProposerSettings, StagedProposer, finalize
from autolabel.proposers.grounding_dino_text import cache_text_backbone
from autolabel.proposers.runtime_parity import PARITY_SHAPES, Tolerance, export_parity, parity_images
from autolabel.proposers.runtime_select import select_runtime
from autolabel.proposers.torch_speed import gpu_preprocessing, maybe_compile

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.ontology import Ontology

DEFAULT_MODEL_ID = "IDEA-Research/grounding-dino-tiny"
NAME = "grounding-dino"


@dataclass(frozen=True)
class Caption:
    """One caption sent to the text encoder and the ontology class of each of its tokens (-1: none)."""

    text: str
    token_classes: np.ndarray  # (num_tokens,) int, aligned with the tokenized caption


@dataclass(frozen=True)
class ChunkOutput:
    """One image's raw output for one caption: logits (queries, caption tokens), boxes (queries, 4) cxcywh."""

    logits: np.ndarray
    boxes: np.ndarray


def caption_text(prompts: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``["Hex bolt", "nut"]`` -> ``("hex bolt . nut .", [(0, 8), (11, 14)])`` (character spans)."""
    parts, spans, cursor = [], [], 0
    for prompt in prompts:
        text = caption_phrase(prompt)
        spans.append((cursor, cursor + len(text)))
        parts.append(text + " .")
        cursor += len(text) + 3
    return " ".join(parts), spans


def caption_phrase(prompt: str) -> str:
    """Lowercase, single spaces, no '.' (the model splits phrases at '.')."""
    return " ".join(prompt.lower().replace(".", " ").split())


def token_classes_from_offsets(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], span_classes: Sequence[int]
) -> np.ndarray:
    """Class of each token: that of the prompt span containing the token's characters, else -1."""
    out = np.full(len(offsets), -1, dtype=np.int64)
    for index, (start, end) in enumerate(offsets):
        if end <= start:  # special tokens ([CLS], [SEP], padding) have empty offsets
            continue
        for (span_start, span_end), class_index in zip(spans, span_classes):
            if span_start <= start and end <= span_end:
                out[index] = class_index
                break
    return out


def build_captions(prompt_table: Sequence[tuple[str, int]], tokenizer: Any, max_tokens: int) -> list[Caption]:
    """Pack (prompt, class) pairs into as few captions as fit ``max_tokens`` (specials included)."""
    if not getattr(tokenizer, "is_fast", False):
        raise AutolabelError("grounding-dino needs a fast tokenizer (offset mapping) in the model folder")
    chunks: list[list[tuple[str, int]]] = [[]]
    used = 2  # [CLS] ... [SEP]
    for prompt, class_index in prompt_table:
        cost = len(tokenizer(caption_phrase(prompt), add_special_tokens=False)["input_ids"]) + 1  # + "."
        if cost + 2 > max_tokens:
            raise AutolabelError(f"prompt '{prompt}' is longer than the text encoder's {max_tokens} tokens")
        if used + cost > max_tokens:
            chunks.append([])
            used = 2
        chunks[-1].append((prompt, class_index))
        used += cost
    captions = []
    for chunk in chunks:
        text, spans = caption_text([prompt for prompt, _ in chunk])
        encoded = tokenizer(text, return_offsets_mapping=True)
        if len(encoded["input_ids"]) > max_tokens:  # tokenization in context differs: should not happen
            raise AutolabelError(f"caption exceeds {max_tokens} tokens: shorten the prompts")
        token_classes = token_classes_from_offsets(encoded["offset_mapping"], spans, [c for _, c in chunk])
        captions.append(Caption(text=text, token_classes=token_classes))
    return captions


def class_scores(logits: np.ndarray, token_classes: np.ndarray, num_classes: int) -> np.ndarray:
    """(queries, tokens) logits -> (queries, classes) scores: max sigmoid over each class's tokens."""
    probs = 1.0 / (1.0 + np.exp(-logits[:, : len(token_classes)].astype(np.float64)))
    scores = np.zeros((probs.shape[0], num_classes), dtype=np.float64)
    for class_index in range(num_classes):
        columns = token_classes == class_index
        if columns.any():
            scores[:, class_index] = probs[:, columns].max(axis=1)
    return scores


def detections_from_outputs(
    chunks: Sequence[ChunkOutput],
    captions: Sequence[Caption],
    options: FinalizeOptions,
    *,
    size: tuple[int, int],
    num_classes: int,
    text_threshold: float,
) -> sv.Detections:
    """One image's raw outputs (one per caption) -> detections in its pixels. Pure."""
    from autolabel import detections as dets

    height, width = size
    xyxy_parts, class_parts, score_parts = [], [], []
    for chunk, caption in zip(chunks, captions):
        scores = class_scores(chunk.logits, caption.token_classes, num_classes)
        best = scores.argmax(axis=1)
        confidence = scores[np.arange(len(best)), best]
        keep = confidence >= text_threshold
        xyxy_parts.append(cxcywh_to_xyxy(chunk.boxes[keep]) * np.array([width, height, width, height]))
        class_parts.append(best[keep])
        score_parts.append(confidence[keep])
    if not xyxy_parts:
        return dets.empty()
    det = dets.make(np.concatenate(xyxy_parts), np.concatenate(class_parts), np.concatenate(score_parts))
    return finalize(det, options, width=width, height=height)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


@dataclass
class GroundingDinoInputs:
    """Preprocessed batch: images grouped by resized shape, each group a stacked pixel tensor."""

    groups: list[tuple[list[int], Any, Any]]  # (indices into the batch, pixel_values, pixel_mask or None)
    count: int


class GroundingDinoProposer(StagedProposer):
    """Grounding DINO zero-shot detector; see the module docstring for the class-mapping rule."""

    def __init__(self, settings: ProposerSettings, ontology: Ontology):
        loaded = hf_weights.ZeroShotDetector(
            settings, name=NAME, model_id=DEFAULT_MODEL_ID, model_type="grounding-dino"
        )
        self.settings = settings
        self.ontology = ontology
        self.device, self.dtype = loaded.device, loaded.dtype
        self.processor, self.model = processor, model = loaded.processor, loaded.model
        self.model_version = loaded.model_version
        self.finalize_options = FinalizeOptions.from_settings(settings, ontology)
        self.text_backbone = cache_text_backbone(model)
        self.captions = build_captions(
            ontology.prompt_table(), processor.tokenizer, model.config.max_text_len
        )
        self.text_inputs = [
            processor.tokenizer(caption.text, return_tensors="pt", return_token_type_ids=True)
            for caption in self.captions
        ]
        self.image_kwargs: dict[str, Any] = {}
        if settings.max_side:
            shortest = processor.image_processor.size.get("shortest_edge") or settings.max_side
            self.image_kwargs["size"] = {
                "shortest_edge": min(shortest, settings.max_side),
                "longest_edge": settings.max_side,
            }
        self.image_kwargs.update(gpu_preprocessing(self.device))

        import torch

        cpu_fp32 = self.device == "cpu" and self.dtype == torch.float32
        self.square: int | None = None  # S of the fixed S x S input rule, None: the processor's resize
        if settings.runtime != "torch" and cpu_fp32:
            self.square = export.square_side(settings.max_side, processor)
            self.model_version += f"@square{self.square}"
        self.selections = self.select_runtimes(cpu_fp32)
        self.graphs = [selection.graph for selection in self.selections] or [None] * len(self.captions)
        self.forward_model = maybe_compile(self.model, settings, self.device)

    def select_runtimes(self, cpu_fp32: bool) -> list[Any]:
        """One runtime selection per caption (auto chooses on the first; the others follow it)."""
        if self.settings.runtime == "torch":
            return []
        selections: list[Any] = []
        for index, (caption, text) in enumerate(zip(self.captions, self.text_inputs)):
            asked = self.settings.runtime
            if index and (asked == "auto" or not cpu_fp32):
                asked = selections[0].used
            module = export.caption_module(self.model, text, len(caption.token_classes))
            selections.append(
                select_runtime(
                    name=NAME,
                    asked=asked,
                    device=self.device,
                    cpu_fp32=cpu_fp32,
                    make_spec=lambda module=module, text=text: export.export_spec(
                        name=NAME,
                        source=str(self.settings.model_path or DEFAULT_MODEL_ID),
                        module=module,
                        pixels=self.parity_inputs,
                        text_inputs=text,
                        side=self.square,
                    ),
                    parity=lambda graph, module=module, index=index: self.parity(index, module, graph),
                    run_torch=lambda module=module: export.run_torch(module, *self.parity_inputs),
                    run_graph=lambda graph: export.run_graph(graph, *self.parity_inputs),
                )
            )
        return selections

    @functools.cached_property
    def parity_inputs(self) -> tuple[Any, Any]:
        return export.square_inputs(self.processor, parity_images(), self.square)

    @property
    def runtime_used(self) -> str:
        used = sorted({selection.used for selection in self.selections}) or ["torch"]
        return "+".join(used)

    def parity(self, index: int, module: Any, graph: Any) -> tuple[str | None, dict]:
        """Caption ``index``'s export vs PyTorch on the parity images: raw outputs, then detections."""
        tolerances = {
            "logits": Tolerance(export.PARITY_LOGIT_ATOL, export.PARITY_LOGIT_RTOL),
            "boxes": Tolerance(export.PARITY_BOX_ATOL),
        }

        def detections_of(outputs):
            logits, boxes = outputs
            return [
                detections_from_outputs(
                    [ChunkOutput(logits=logits[row], boxes=boxes[row])],
                    [self.captions[index]],
                    self.finalize_options,
                    size=(height, width),
                    num_classes=len(self.ontology.classes),
                    text_threshold=self.settings.text_threshold,
                )
                for row, (height, width) in enumerate(PARITY_SHAPES)
            ]

        expected = export.run_torch(module, *self.parity_inputs)
        got = export.run_graph(graph, *self.parity_inputs)
        return export_parity(
            expected, got, tolerances, detections_of, score_atol=export.PARITY_SCORE_ATOL, pair_queries=True
        )

    def preprocess(self, images: Sequence[np.ndarray]) -> GroundingDinoInputs:
        import torch

        if self.square:
            pixel_values, pixel_mask = export.square_inputs(self.processor, images, self.square)
            return GroundingDinoInputs(
                groups=[(list(range(len(images))), pixel_values, pixel_mask)], count=len(images)
            )
        by_shape: dict[tuple[int, ...], list[tuple[int, Any]]] = {}
        for index, image in enumerate(images):
            pixels = self.processor.image_processor(
                images=[image], return_tensors="pt", do_pad=False, **self.image_kwargs
            )["pixel_values"]
            by_shape.setdefault(tuple(pixels.shape), []).append((index, pixels))
        groups = [
            ([index for index, _ in members], torch.cat([pixels for _, pixels in members]), None)
            for members in by_shape.values()
        ]
        return GroundingDinoInputs(groups=groups, count=len(images))

    def forward(self, inputs: GroundingDinoInputs) -> list[list[ChunkOutput]]:
        outputs: list[list[ChunkOutput]] = [[] for _ in range(inputs.count)]
        for indices, pixel_values, pixel_mask in inputs.groups:
            for caption, text, graph in zip(self.captions, self.text_inputs, self.graphs):
                if graph is not None:
                    logits, boxes = export.run_graph(graph, pixel_values, pixel_mask)
                else:
                    logits, boxes = self.run_torch(pixel_values, pixel_mask, text, len(caption.token_classes))
                for row, index in enumerate(indices):
                    outputs[index].append(ChunkOutput(logits=logits[row], boxes=boxes[row]))
        return outputs

    def run_torch(
        self, pixel_values: Any, pixel_mask: Any, text: Any, tokens: int
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        batch = len(pixel_values)
        with torch.inference_mode():
            pixel_values = pixel_values.to(self.device, self.dtype)
            if pixel_mask is None:
                pixel_mask = torch.ones((batch, *pixel_values.shape[-2:]), dtype=torch.long)
            result = self.forward_model(
                pixel_values=pixel_values,
                pixel_mask=pixel_mask.to(self.device),
                **{key: value.to(self.device).expand(batch, -1) for key, value in text.items()},
            )
        logits = result.logits[:, :, :tokens].float().cpu().numpy()
        return logits, result.pred_boxes.float().cpu().numpy()

    def postprocess_one(self, output: list[ChunkOutput], *, width: int, height: int) -> sv.Detections:
        return detections_from_outputs(
            output,
            self.captions,
            self.finalize_options,
            size=(height, width),
            num_classes=len(self.ontology.classes),
            text_threshold=self.settings.text_threshold,
        )
