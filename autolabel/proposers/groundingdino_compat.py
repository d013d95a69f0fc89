"""transformers 5 compatibility for groundingdino-py's BERT wrapper (``BertModelWarper``).

groundingdino-py 0.4.0 wraps ``BertModel`` and, in its ``__init__``, copies three helpers that
transformers 5 removed from ``ModuleUtilsMixin`` (``get_extended_attention_mask``,
``invert_attention_mask``, ``get_head_mask``); its ``forward`` then calls ``BertEncoder`` with the
transformers 4 signature (``head_mask``, ``output_attentions``, ``output_hidden_states``,
``return_dict``), which the transformers 5 encoder no longer takes.

``patch_bert_warper`` gives ``BertModelWarper`` an ``__init__`` and a ``forward`` that do the same
with the transformers 4.x ``ModuleUtilsMixin`` formulas below (same semantics, rewritten) and the
transformers 5 encoder call; the class keeps the methods it replaced under its marker attribute. It patches only that class (never transformers), only when
``BertModel`` lacks the helpers, and only once; the proposer calls it just before the package
builds its model.

The 4.x masks are additive: 1 (attend) -> 0.0, 0 (masked) -> the dtype's most negative value,
which transformers 5's eager and SDPA attention add to the scores as they did in 4.x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "extended_attention_mask",
    "head_mask_per_layer",
    "inverted_attention_mask",
    "patch_bert_warper",
]

_PATCHED = "_autolabel_transformers5_compat"


def extended_attention_mask(
    attention_mask: torch.Tensor, input_shape: tuple[int, ...], *, dtype: torch.dtype, is_decoder: bool
) -> torch.Tensor:
    """4.x ``get_extended_attention_mask``: (b, n, n) -> (b, 1, n, n); (b, n) -> (b, 1, 1, n), or
    for a decoder the causal mask times the padding mask (b, 1, n, n); then additive in ``dtype``."""
    import torch

    if attention_mask.dim() == 3:
        extended = attention_mask[:, None, :, :]
    elif attention_mask.dim() == 2:
        extended = (
            _causal_decoder_mask(input_shape, attention_mask)
            if is_decoder
            else attention_mask[:, None, None, :]
        )
    else:
        raise ValueError(
            f"Wrong shape for input_ids (shape {tuple(input_shape)}) or attention_mask "
            f"(shape {tuple(attention_mask.shape)})"
        )
    extended = extended.to(dtype=dtype)
    return (1.0 - extended) * torch.finfo(dtype).min


def _causal_decoder_mask(input_shape: tuple[int, ...], attention_mask: torch.Tensor) -> torch.Tensor:
    """4.x ``create_extended_attention_mask_for_decoder`` (a prefix of ones for cached positions)."""
    import torch

    batch_size, seq_length = input_shape
    seq_ids = torch.arange(seq_length, device=attention_mask.device)
    causal = seq_ids[None, None, :].repeat(batch_size, seq_length, 1) <= seq_ids[None, :, None]
    causal = causal.to(attention_mask.dtype)
    if causal.shape[1] < attention_mask.shape[1]:
        prefix = attention_mask.shape[1] - causal.shape[1]
        ones = torch.ones((batch_size, seq_length, prefix), device=attention_mask.device, dtype=causal.dtype)
        causal = torch.cat([ones, causal], dim=-1)
    return causal[:, None, :, :] * attention_mask[:, None, None, :]


def inverted_attention_mask(encoder_attention_mask: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    """4.x ``invert_attention_mask``: (b, m, n) -> (b, 1, m, n), (b, n) -> (b, 1, 1, n), additive."""
    import torch

    if encoder_attention_mask.dim() == 3:
        extended = encoder_attention_mask[:, None, :, :]
    elif encoder_attention_mask.dim() == 2:
        extended = encoder_attention_mask[:, None, None, :]
    else:  # 4.x failed here with an unbound local; say what is wrong instead
        raise ValueError(f"encoder_attention_mask must be 2-D or 3-D, got {encoder_attention_mask.dim()}-D")
    extended = extended.to(dtype=dtype)
    return (1.0 - extended) * torch.finfo(dtype).min


def head_mask_per_layer(
    head_mask: torch.Tensor | None,
    num_hidden_layers: int,
    *,
    dtype: torch.dtype,
    is_attention_chunked: bool = False,
) -> torch.Tensor | list[None]:
    """4.x ``get_head_mask``: None -> [None] * layers; (heads,) or (layers, heads) -> 5-D
    (layers, 1, heads, 1, 1) in ``dtype`` (one more trailing axis when attention is chunked)."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    if head_mask.dim() != 5:
        raise ValueError(f"head_mask.dim != 5, instead {head_mask.dim()}")
    head_mask = head_mask.to(dtype=dtype)
    return head_mask.unsqueeze(-1) if is_attention_chunked else head_mask


def patch_bert_warper() -> bool:
    """Make groundingdino's ``BertModelWarper`` run on this transformers; True when it is patched.

    A no-op (False) when ``BertModel`` still has the 4.x helpers; idempotent.
    """
    from groundingdino.models.GroundingDINO import bertwarper
    from transformers import BertModel

    warper = bertwarper.BertModelWarper
    if getattr(warper, _PATCHED, False):
        return True
    if hasattr(BertModel, "get_extended_attention_mask"):
        return False
    originals = {name: vars(warper)[name] for name in ("__init__", "forward")}
    warper.__init__ = _init
    warper.forward = _forward
    warper.get_extended_attention_mask = _get_extended_attention_mask
    warper.invert_attention_mask = _invert_attention_mask
    warper.get_head_mask = _get_head_mask
    setattr(warper, _PATCHED, originals)  # the marker keeps what it replaced
    return True


def _init(self, bert_model) -> None:
    import torch

    torch.nn.Module.__init__(self)
    self.config = bert_model.config
    self.embeddings = bert_model.embeddings
    self.encoder = bert_model.encoder
    self.pooler = bert_model.pooler


def _dtype(self) -> torch.dtype:
    # 4.x's ``self.dtype``: the wrapped BertModel's first floating-point parameter
    return next(p.dtype for p in self.embeddings.parameters() if p.is_floating_point())


def _get_extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=None):
    return extended_attention_mask(
        attention_mask, input_shape, dtype=dtype or _dtype(self), is_decoder=self.config.is_decoder
    )


def _invert_attention_mask(self, encoder_attention_mask):
    return inverted_attention_mask(encoder_attention_mask, dtype=_dtype(self))


def _get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
    return head_mask_per_layer(
        head_mask, num_hidden_layers, dtype=_dtype(self), is_attention_chunked=is_attention_chunked
    )


def _forward(
    self,
    input_ids=None,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    head_mask=None,
    inputs_embeds=None,
    encoder_hidden_states=None,
    encoder_attention_mask=None,
    past_key_values=None,
    use_cache=None,
    output_attentions=None,
    output_hidden_states=None,
    return_dict=None,
):
    """The package's forward with the transformers 5 encoder call.

    Grounding DINO runs its BERT as an encoder without a cache, head mask or extra outputs; those
    transformers 5 cannot give through the encoder, so asking for them is an error, not ignored.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    if past_key_values is not None or use_cache or output_attentions or output_hidden_states:
        raise NotImplementedError(
            "groundingdino's BERT on transformers 5: no past_key_values, use_cache, output_attentions "
            "or output_hidden_states"
        )
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("specify exactly one of input_ids and inputs_embeds")
    input_shape = tuple(input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1])
    device = input_ids.device if input_ids is not None else inputs_embeds.device
    if attention_mask is None:
        attention_mask = torch.ones(input_shape, device=device)
    if token_type_ids is None:
        token_type_ids = torch.zeros(input_shape, dtype=torch.long, device=device)
    extended = self.get_extended_attention_mask(attention_mask, input_shape)
    encoder_extended = None
    if self.config.is_decoder and encoder_hidden_states is not None:
        if encoder_attention_mask is None:
            encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=device)
        encoder_extended = self.invert_attention_mask(encoder_attention_mask)
    if any(m is not None for m in self.get_head_mask(head_mask, self.config.num_hidden_layers)):
        raise NotImplementedError("groundingdino's BERT on transformers 5: no head_mask")

    embedding_output = self.embeddings(
        input_ids=input_ids,
        position_ids=position_ids,
        token_type_ids=token_type_ids,
        inputs_embeds=inputs_embeds,
    )
    encoder_outputs = self.encoder(
        embedding_output,
        attention_mask=extended,
        encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_extended,
        use_cache=False,
    )
    sequence_output = encoder_outputs.last_hidden_state
    pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
    if not (self.config.return_dict if return_dict is None else return_dict):
        return (sequence_output, pooled_output)
    return BaseModelOutputWithPoolingAndCrossAttentions(
        last_hidden_state=sequence_output, pooler_output=pooled_output
    )
