"""CUDA-only speed-ups leave the CPU path alone (no GPU here: what can be checked on a CPU)."""

from __future__ import annotations

import numpy as np

from autolabel.proposers.torch_speed import gpu_preprocessing


def test_preprocessing_moves_to_the_gpu_only_on_cuda():
    assert gpu_preprocessing("cpu") == {} and gpu_preprocessing("mps") == {}
    assert gpu_preprocessing("cuda") == {"device": "cuda"}
    assert gpu_preprocessing("cuda:1") == {"device": "cuda:1"}


def test_the_image_processor_takes_the_device_argument(tiny_owlv2_dir):
    """The keyword the CUDA path passes is one transformers' processor accepts (same tensor on CPU)."""
    import torch
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_owlv2_dir).image_processor
    images = [np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)]
    plain = processor(images=images, return_tensors="pt")["pixel_values"]
    placed = processor(images=images, return_tensors="pt", device="cpu")["pixel_values"]
    assert placed.device.type == "cpu" and torch.equal(plain, placed)
