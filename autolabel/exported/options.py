"""Which exported variant to produce (format, precision, shapes) and whether this machine can."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from autolabel.errors import AutolabelError

FORMATS = ("onnx", "engine", "openvino")
INT8_FORMATS = ("onnx", "engine")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    format: str = "onnx"
    imgsz: int = 640
    dynamic: bool = False
    half: bool = False
    int8: bool = False  # static INT8, calibrated on the student's training images (ONNX Runtime / TensorRT)
    nms: bool = False

    def __post_init__(self):
        if self.half and self.int8:
            raise AutolabelError("--half and --int8 exclude each other: choose one precision")
        if self.int8 and self.format not in INT8_FORMATS:
            raise AutolabelError(f"--int8: supported for {', '.join(INT8_FORMATS)}, not {self.format}")

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"

    @property
    def stem(self) -> str:
        """A file stem per variant, so an fp16 engine never overwrites the fp32 ONNX next to it."""
        parts = [self.format, self.precision]
        if self.dynamic:
            parts.append("dynamic")
        if self.nms:
            parts.append("nms")
        return "-".join(parts)


def check_exporter(fmt: str, *, cuda_available: bool | None = None) -> None:
    """Fail in one line, before any work, when this machine cannot produce ``fmt``."""
    if fmt not in FORMATS:
        raise AutolabelError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if fmt == "engine":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            raise AutolabelError(
                "--format engine: TensorRT needs an NVIDIA GPU with CUDA and none is available here"
                " (export --format onnx instead, or run this on a GPU machine)"
            )
        if importlib.util.find_spec("tensorrt") is None:
            raise AutolabelError(
                "--format engine: the optional package 'tensorrt' is not installed: pip install tensorrt"
            )
    if fmt == "openvino" and importlib.util.find_spec("openvino") is None:
        raise AutolabelError(
            "--format openvino: the optional package 'openvino' is not installed: pip install openvino"
        )
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise AutolabelError("--format onnx: the package 'onnx' is not installed: pip install onnx onnxslim")
