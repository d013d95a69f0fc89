"""OWLv2 split in two: the text side (once per ontology) and the image side (every batch).

``Owlv2ForObjectDetection.forward`` runs the text encoder on every call, for every image of the
batch. The prompts do not change within a run, so ``text_queries`` computes their normalized
embeddings once (exactly as ``Owlv2Model.forward`` does: ``text_projection`` of the pooled output,
L2-normalized), and ``image_side_module`` wraps the model's own ``image_embedder``,
``class_predictor`` and ``box_predictor`` into a module of ``(pixel_values, query_embeds,
query_mask)`` -> ``(logits, pred_boxes)``: the same numbers as the full forward, and the part an
accelerated runtime (ONNX) exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TextQueries:
    """The ontology's prompts, encoded once: (1, prompts, dim) embeddings and a (1, prompts) mask."""

    embeds: Any  # torch.Tensor
    mask: Any  # torch.Tensor (bool)


def text_queries(model: Any, input_ids: Any, attention_mask: Any) -> TextQueries:
    """One text-encoder pass over every prompt; what the full forward computes per image."""
    import torch

    with torch.inference_mode():
        pooled = model.owlv2.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        embeds = model.owlv2.text_projection(pooled)
        embeds = embeds / torch.linalg.norm(embeds, ord=2, dim=-1, keepdim=True)
    # the model's rule: a query whose first token is padding (id 0) is masked out
    return TextQueries(embeds=embeds[None], mask=(input_ids[:, 0] > 0)[None])


def image_side_module(model: Any, *, interpolate: bool) -> Any:
    """A torch module: (pixels (B,3,H,W), query_embeds (1,Q,D), query_mask (1,Q)) -> (logits, boxes)."""
    import torch

    class Owlv2ImageSide(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.detector = model

        def forward(self, pixel_values, query_embeds, query_mask):
            feature_map, _ = self.detector.image_embedder(
                pixel_values=pixel_values, interpolate_pos_encoding=interpolate
            )
            batch, rows, cols, dim = feature_map.shape
            image_feats = feature_map.reshape(batch, rows * cols, dim)
            queries = query_embeds.expand(batch, -1, -1)
            mask = query_mask.expand(batch, -1)
            logits, _ = self.detector.class_predictor(image_feats, queries, mask)
            boxes = self.detector.box_predictor(image_feats, feature_map, interpolate)
            return logits, boxes

    return Owlv2ImageSide().eval()
