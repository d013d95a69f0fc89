"""Grounding DINO in ONNX Runtime / OpenVINO: one fixed-shape export per caption, the text side baked in.

What is exported. ``GroundingDinoModel.forward`` has no argument for precomputed text features, and
the image features are fused with the text (feature enhancer, decoder cross-attention), so the
graph is the whole model for one caption: ``(pixel_values, pixel_mask) -> (logits over that
caption's tokens, pred_boxes)``. The caption's ids are buffers, the BERT output is the one cached
per caption (``grounding_dino_text``) and the phrase masks / position ids derived from the ids are
computed once beforehand (``caption_constants``), so the tracer records all of them as constants:
BERT does not run in the exported graph. One export per caption; the caption's hash is part of
the cache folder and of the fingerprint (``ExportSpec.variant`` / ``settings``).

Image size rule (``square_side``): the graph has a fixed input, a square of side S =
``proposer.max_side``, else the processor's ``shortest_edge`` (800 for grounding-dino-tiny). Each
image is resized so that its longer side is S (aspect ratio kept) and padded bottom/right to S x S;
the pixel mask marks the real image. Grounding DINO's boxes are normalized to the unpadded region
(its proposals and reference points are scaled by the valid ratios the mask gives), so they map
back to original pixels with the original (width, height), exactly as the unpadded path does.
Whenever an accelerated runtime is asked for (``onnx``, ``openvino``, ``auto`` on the CPU) the
PyTorch path uses the same rule, so parity compares like for like and a fallback to PyTorch gives
the same detections; ``runtime: torch`` keeps the processor's own resize (shortest edge 800,
longest 1333, no padding). The rule is part of the model version (``@square{S}``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

# Export-time parity against PyTorch: raw outputs, then the detections at the configured thresholds.
# (runtime_parity: per query, atol + rtol * max |PyTorch output|; then detections at IoU 0.9)
PARITY_LOGIT_ATOL = 1e-3
PARITY_LOGIT_RTOL = 1e-4
PARITY_BOX_ATOL = 1e-3  # normalized coordinates
PARITY_SCORE_ATOL = 1e-3


def square_side(max_side: int | None, processor: Any) -> int:
    size = getattr(processor.image_processor, "size", None) or {}
    return int(max_side or size.get("shortest_edge") or 800)


def square_inputs(processor: Any, images: Sequence[np.ndarray], side: int) -> tuple[Any, Any]:
    """(pixel_values (B, 3, S, S), pixel_mask (B, S, S)): longer side resized to S, padded bottom/right."""
    out = processor.image_processor(
        images=list(images),
        return_tensors="pt",
        size={"shortest_edge": side, "longest_edge": side},
        do_pad=True,
        pad_size={"height": side, "width": side},
    )
    return out["pixel_values"], out["pixel_mask"]


def caption_module(model: Any, text_inputs: Any, tokens: int) -> Any:
    """A torch module of one caption: (pixel_values, pixel_mask) -> (logits[..., :tokens], pred_boxes)."""
    import torch

    class CaptionDetector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.detector = model
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                self.register_buffer(key, text_inputs[key].clone(), persistent=False)

        def forward(self, pixel_values, pixel_mask):
            batch = pixel_values.shape[0]
            result = self.detector(
                pixel_values=pixel_values,
                pixel_mask=pixel_mask,
                input_ids=self.input_ids.expand(batch, -1),
                token_type_ids=self.token_type_ids.expand(batch, -1),
                attention_mask=self.attention_mask.expand(batch, -1),
            )
            return result.logits[:, :, :tokens], result.pred_boxes

    return CaptionDetector().eval()


@contextlib.contextmanager
def caption_constants(input_ids: Any):
    """Within the block, the model's phrase masks for ``input_ids`` are precomputed constants.

    ``generate_masks_with_special_tokens_and_transfer_map`` depends only on the caption, and uses
    ``isin`` / ``cummax`` (no ONNX export); computed here once, the tracer sees constants.
    """
    import torch
    from transformers.models.grounding_dino import modeling_grounding_dino as modeling

    original = modeling.generate_masks_with_special_tokens_and_transfer_map
    with torch.no_grad():
        special = torch.tensor(modeling.SPECIAL_TOKENS, device=input_ids.device)
        masks, positions = original(input_ids[:1], special)

    def precomputed(ids, special_tokens=None):
        if ids.shape[1] != input_ids.shape[1]:
            return original(ids, special_tokens)
        batch = ids.shape[0]
        return masks.expand(batch, -1, -1), positions.expand(batch, -1)

    modeling.generate_masks_with_special_tokens_and_transfer_map = precomputed
    try:
        yield
    finally:
        modeling.generate_masks_with_special_tokens_and_transfer_map = original


def caption_hash(input_ids: Any) -> str:
    return hashlib.sha256(np.asarray(input_ids.cpu()).tobytes()).hexdigest()[:10]


def export_spec(
    *, name: str, source: str, module: Any, pixels: tuple[Any, Any], text_inputs: Any, side: int
) -> Any:
    from autolabel.proposers.runtime_cache import ExportSpec

    input_ids = text_inputs["input_ids"]
    return ExportSpec(
        name=name,
        source=source,
        input_size=(side, side),
        module=module,
        example_inputs=pixels,
        input_names=("pixel_values", "pixel_mask"),
        output_names=("logits", "boxes"),
        dynamic_axes={
            "pixel_values": {0: "batch"},
            "pixel_mask": {0: "batch"},
            "logits": {0: "batch"},
            "boxes": {0: "batch"},
        },
        settings={
            "caption_ids": input_ids.tolist(),
            "parity": [PARITY_LOGIT_ATOL, PARITY_LOGIT_RTOL, PARITY_BOX_ATOL, PARITY_SCORE_ATOL],
        },
        variant=caption_hash(input_ids),
        export_context=lambda: caption_constants(input_ids),
    )


def run_graph(graph: Any, pixel_values: Any, pixel_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    logits, boxes = graph.run(
        {"pixel_values": pixel_values.float().numpy(), "pixel_mask": pixel_mask.long().numpy()}
    )
    return np.asarray(logits, dtype=np.float32), np.asarray(boxes, dtype=np.float32)


def run_torch(module: Any, pixel_values: Any, pixel_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.inference_mode():
        logits, boxes = module(pixel_values, pixel_mask)
    return logits.float().cpu().numpy(), boxes.float().cpu().numpy()
