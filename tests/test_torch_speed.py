"""CUDA-only speed-ups leave the CPU path alone (no GPU here: what can be checked on a CPU)."""

from __future__ import annotations

import numpy as np

from autolabel.proposers.torch_speed import gpu_preprocessing


def test_preprocessing_moves_to_the_gpu_only_on_cuda():
    assert gpu_preprocessing("cpu") == {} and gpu_preprocessing("mps") == {}
    assert gpu_preprocessing("cuda") == {"device": "cuda"}
    assert gpu_preprocessing("cuda:1") == {"device": "cuda:1"}


def test_the_image_processor_places_its_output_on_the_device_it_is_given(tiny_owlv2_dir):
    """The keyword the CUDA path passes reaches torch: the same tensor on the CPU, a CUDA tensor on a
    GPU machine, and on a machine without one the processor tries CUDA (and says there is none)."""
    import pytest
    import torch
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_owlv2_dir).image_processor
    images = [np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)]
    plain = processor(images=images, return_tensors="pt")["pixel_values"]
    placed = processor(images=images, return_tensors="pt", device="cpu")
    assert torch.equal(plain, placed["pixel_values"])
    if torch.cuda.is_available():
        on_gpu = processor(images=images, return_tensors="pt", **gpu_preprocessing("cuda"))["pixel_values"]
        assert on_gpu.device.type == "cuda" and torch.allclose(on_gpu.cpu(), plain, atol=1e-5)
    else:
        with pytest.raises(RuntimeError, match="(?i)nvidia|cuda"):
            processor(images=images, return_tensors="pt", **gpu_preprocessing("cuda"))
