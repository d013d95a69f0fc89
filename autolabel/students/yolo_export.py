"""Exporting the YOLO student through ultralytics, and the raw tensors its parity compares.

``export_variant`` exports one variant (format, precision, NMS) of a ``.pt``; ``letterbox`` is the
square input a static export sees; ``raw_output_diff`` compares detect outputs shaped 1x(4+nc)xN.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    from autolabel.exported.options import ExportOptions

LICENSE_NOTE = (
    "The student is an Ultralytics YOLO model: the Ultralytics code and its pretrained weights are"
    " licensed AGPL-3.0 (https://ultralytics.com/license), and so are models derived from them unless"
    " you hold an Ultralytics Enterprise license. Check this before deploying in a closed product."
)


def export_variant(
    weights: Path, options: ExportOptions, out: Path, *, calibration: Path | None = None
) -> Path:
    """Export ``weights`` as ``out`` + the format's suffix (``onnx-fp32.onnx``, ``..._openvino_model``).

    ultralytics names the exported file after the weights it loads, so the variant exports from
    its own link ``<out>.pt``, removed again afterwards."""
    from autolabel.runtime import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    source = out.with_suffix(".pt")
    source.unlink(missing_ok=True)
    try:
        os.link(weights, source)
    except OSError:
        shutil.copyfile(weights, source)
    try:
        return _export_from(YOLO(str(source), task="detect"), source, options, calibration)
    finally:
        source.unlink(missing_ok=True)


def _export_from(model, source: Path, options: ExportOptions, calibration: Path | None) -> Path:
    exported = model.export(
        format=options.format,
        imgsz=options.imgsz,
        dynamic=options.dynamic,
        quantize=8 if options.int8 else 16 if options.half else None,
        nms=options.nms,
        **({"data": str(calibration), "split": "train"} if options.int8 else {}),
        device=export_device(options.format),
        verbose=False,
    )
    if not exported or not Path(exported).exists():
        raise AutolabelError(f"{options.format} export produced no file (see the ultralytics log above)")
    exported = Path(exported)
    if options.int8 and exported.is_file() and exported.stem.endswith("_int8"):  # ultralytics' own suffix
        exported = exported.replace(exported.with_name(f"{source.stem}{exported.suffix}"))
    return exported


def letterbox(rgb: np.ndarray, imgsz: int) -> np.ndarray:
    """The square letterboxed 1x3xHxW float32 tensor ultralytics feeds a static export."""
    from ultralytics.data.augment import LetterBox

    padded = LetterBox(new_shape=(imgsz, imgsz), auto=False)(image=rgb)
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def raw_output_diff(reference: Sequence[np.ndarray], exported: Sequence[np.ndarray]) -> tuple[float, float]:
    """(max |diff| over everything, over the class-score rows) of detect outputs shaped 1x(4+nc)xN."""
    overall, scores = 0.0, 0.0
    for ref, exp in zip(reference, exported, strict=True):
        if ref.shape != exp.shape:
            raise AutolabelError(f"exported output shape {exp.shape} differs from PyTorch {ref.shape}")
        diff = np.abs(ref.astype(np.float64) - exp.astype(np.float64))
        overall = max(overall, float(diff.max(initial=0.0)))
        scores = max(scores, float(diff[:, 4:].max(initial=0.0)))
    return overall, scores


def export_device(fmt: str) -> str:
    # ONNX and OpenVINO export on the CPU: on a GPU ultralytics would ask for onnxruntime-gpu.
    return "0" if fmt == "engine" else "cpu"


__all__: Sequence[str] = ("LICENSE_NOTE", "export_device", "export_variant", "letterbox", "raw_output_diff")
