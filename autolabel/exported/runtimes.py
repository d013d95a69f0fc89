"""The runtimes an exported student runs in, and its raw head outputs next to PyTorch's.

Raw outputs are compared on the same tensor the exported graph sees (``Student.raw_input``: the
square letterbox for YOLO, the plain resize for D-FINE): PyTorch through the student's network
(``Student.torch_module``), ONNX through onnxruntime directly, TensorRT and OpenVINO through
ultralytics' AutoBackend. ``*_outputs`` return every tensor output, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.students.yolo import names_list


def torch_outputs(model, batch: np.ndarray) -> list[np.ndarray]:
    """The tensor outputs of ``model`` on ``batch`` (a YOLO DetectionModel's feature list is skipped)."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(torch.from_numpy(batch).to(device))
    out = out if isinstance(out, (list, tuple)) else [out]
    return [o.float().cpu().numpy() for o in out if isinstance(o, torch.Tensor)]


def onnx_session(path: Path, providers: Sequence[str] | None = None, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    available = ort.get_available_providers()
    providers = [p for p in (providers or available) if p in available]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def onnx_outputs(session, batch: np.ndarray) -> list[np.ndarray]:
    spec = session.get_inputs()[0]
    dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
    return [np.asarray(o, dtype=np.float32) for o in session.run(None, {spec.name: batch.astype(dtype)})]


def onnx_names(session) -> list[str]:
    meta = session.get_modelmeta().custom_metadata_map
    if "names" not in meta:
        raise AutolabelError("the exported ONNX file carries no class names in its metadata")
    return names_list(meta["names"])


def autobackend(path: Path, device: str, half: bool):
    """Any exported format (TensorRT, OpenVINO) loaded by ultralytics' AutoBackend on ``device``."""
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    return AutoBackend(str(path), device=torch.device(device), fp16=half, verbose=False)


def backend_outputs(backend, batch: np.ndarray) -> list[np.ndarray]:
    """Raw outputs of any exported format through ultralytics' AutoBackend (TensorRT, OpenVINO)."""
    import torch

    x = torch.from_numpy(batch).to(backend.device)
    x = x.half() if getattr(backend, "fp16", False) else x
    out = backend(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    return [out.float().cpu().numpy()]


def openvino_cpu_precision() -> str:
    """The inference precision OpenVINO's CPU plugin picks by default here ('f32', 'bf16', ...)."""
    from autolabel.runtime import import_openvino

    return import_openvino().Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def openvino_precision_note() -> str | None:
    """Says so when OpenVINO will not compute an fp32 model in fp32 on this CPU (None when it does)."""
    precision = openvino_cpu_precision()
    if precision == "f32":
        return None
    return (
        f"OpenVINO runs this model in {precision} on this CPU "
        "(its default inference precision where the CPU supports it)"
    )
