"""Grounding DINO's text backbone (BERT) run once per caption instead of once per image.

``GroundingDinoModel.forward`` takes ``input_ids`` and runs ``self.text_backbone`` on every call; it
has no argument for a precomputed text output. The BERT output depends only on the caption (its
ids, the phrase-block attention mask and position ids derived from them, the token types), not on
the image, and every row of a batch carries the same caption. So ``cache_text_backbone`` puts a
wrapper in the model's ``text_backbone`` slot that runs the real backbone on one row the first time
a caption is seen and returns that output, expanded to the batch, afterwards. Anything it does not
recognise (rows that differ, other arguments) goes to the real backbone unchanged.

Only the BERT pass is cached: the model's feature enhancer fuses text with image features, so
everything after ``text_projection`` is per image and still runs every batch.
"""

from __future__ import annotations

from typing import Any


def cache_text_backbone(model: Any) -> Any:
    """Install the caching wrapper in ``model.model.text_backbone`` (idempotent); returns it."""
    import torch

    inner_model = model.model
    if getattr(inner_model.text_backbone, "is_caption_cache", False):
        return inner_model.text_backbone

    class CaptionCachedTextBackbone(torch.nn.Module):
        is_caption_cache = True

        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.cache: dict[tuple, Any] = {}

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
            key = caption_key(input_ids, attention_mask, token_type_ids, position_ids, kwargs)
            if key is None:
                return self.backbone(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
            if key not in self.cache:
                self.cache[key] = self.backbone(
                    input_ids[:1], first(attention_mask), first(token_type_ids), first(position_ids), **kwargs
                )
            return expand_output(self.cache[key], input_ids.shape[0], kwargs.get("return_dict", True))

    wrapper = CaptionCachedTextBackbone(inner_model.text_backbone)
    inner_model.text_backbone = wrapper
    return wrapper


def first(tensor: Any) -> Any:
    return None if tensor is None else tensor[:1]


def caption_key(input_ids, attention_mask, token_type_ids, position_ids, kwargs) -> tuple | None:
    """A key for the caption when every row is the same caption, else None (not cached)."""
    if set(kwargs) - {"return_dict"}:
        return None
    parts = []
    for tensor in (input_ids, attention_mask, token_type_ids, position_ids):
        if tensor is None:
            parts.append(None)
            continue
        if not bool((tensor == tensor[:1]).all()):
            return None
        row = tensor[:1].detach().cpu()
        parts.append((str(row.dtype), tuple(row.shape), row.numpy().tobytes()))
    return (str(input_ids.device), *parts)


def expand_output(output: Any, batch: int, return_dict: bool) -> Any:
    """The one-row output repeated (a view) over ``batch`` rows, in the form the model expects."""
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    hidden = output[0] if not return_dict else output.last_hidden_state
    hidden = hidden.expand(batch, *hidden.shape[1:])
    if not return_dict:
        return (hidden,)
    return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden)
