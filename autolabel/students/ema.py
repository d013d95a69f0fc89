"""A model EMA as D-FINE (and RT-DETR, and ultralytics) train with it: after every optimizer step
``ema = d * ema + (1 - d) * model`` over every floating-point parameter and buffer, with the decay
ramped up from 0 as ``d = decay * (1 - exp(-updates / warmups))`` so the first steps' random weights
fade out quickly. D-FINE's configs use ``decay 0.9999, warmups 1000`` (``configs/dfine/include/
optimizer.yml``; RT-DETR's ``ExponentialMovingAverage`` ramps over 2000 updates).

Built on ``torch.optim.swa_utils.AveragedModel`` (its ``n_averaged`` counts the updates and is part
of its ``state_dict``, so a resumed run continues the same ramp).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EMA_DECAY = 0.9999
EMA_WARMUPS = 1000


def ema_decay(updates: int, *, decay: float = EMA_DECAY, warmups: int = EMA_WARMUPS) -> float:
    """The decay of the ``updates``-th update: 0 at the start, ``decay`` after many ``warmups``."""
    return decay * (1.0 - math.exp(-updates / warmups))


def model_ema(model, *, decay: float = EMA_DECAY, warmups: int = EMA_WARMUPS):
    """An ``AveragedModel`` of ``model`` (a deep copy, frozen, in eval mode); call
    ``update_parameters(model)`` after each optimizer step and read the average from ``.module``."""
    import torch
    from torch.optim.swa_utils import AveragedModel

    def ramped(averaged: list, current: list, n_averaged) -> None:
        if not averaged[0].is_floating_point():  # step counters and masks follow the model
            torch._foreach_copy_(averaged, current)
            return
        d = ema_decay(int(n_averaged), decay=decay, warmups=warmups)
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    ema = AveragedModel(model, multi_avg_fn=ramped, use_buffers=True)
    ema.module.eval()
    for param in ema.parameters():
        param.requires_grad_(False)
    return ema


__all__: Sequence[str] = ("EMA_DECAY", "EMA_WARMUPS", "ema_decay", "model_ema")
