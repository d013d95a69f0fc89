"""PyTorch-side speed-ups that only apply on CUDA, so CPU behaviour never changes.

- fp16: ``proposer.fp16`` (default on) loads the detector in half precision on CUDA
  (``hf_weights.ZeroShotDetector``); the CPU always runs fp32.
- ``torch.compile``: opt-in (``proposer.torch_compile`` / ``--torch-compile``), CUDA only. OWLv2's
  image side has one fixed input shape (the processor's square), so it compiles once; Grounding
  DINO recompiles for each new input shape. Not measured in this project yet (no GPU here).
- preprocessing on the GPU: on CUDA the image processor (transformers 5's torchvision-backed one)
  gets ``device``, so resizing, rescaling and normalizing run on the GPU in the engine's prefetch
  thread and the batch arrives there. Not measured yet either.
"""

from __future__ import annotations

import sys
from typing import Any


def maybe_compile(module: Any, settings: Any, device: str) -> Any:
    """``torch.compile(module)`` when asked for and on CUDA; else ``module`` unchanged."""
    if not getattr(settings, "torch_compile", False):
        return module
    if not device.startswith("cuda"):
        print(
            f"{settings.model}: --torch-compile applies on CUDA only; running eager on {device}",
            file=sys.stderr,
        )
        return module
    import torch

    return torch.compile(module)


def gpu_preprocessing(device: str) -> dict[str, Any]:
    """The image processor's keyword arguments that move preprocessing onto ``device`` (CUDA only)."""
    return {"device": device} if str(device).startswith("cuda") else {}
