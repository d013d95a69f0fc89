"""The accelerated runtimes a proposer's exported graph runs in: ONNX Runtime and OpenVINO (CPU).

Each runtime has the files it keeps in its cache folder (``FILES``), an ``export`` from the torch
module (``runtime_cache.ExportSpec``) and an ``open_graph`` that returns a ``Graph``: named numpy
inputs in, the outputs in the export's order out.

- ``onnx``: ``torch.onnx.export`` (the TorchScript exporter, opset 17), run by onnxruntime's CPU
  provider.
- ``openvino``: the same ONNX export converted by ``openvino.convert_model`` and saved with fp32
  weights (``compress_to_fp16=False``), compiled for the CPU with ``INFERENCE_PRECISION_HINT=f32``:
  OpenVINO's CPU plugin otherwise computes in bf16 on CPUs that support it (``precision_note``
  records both), which does not match PyTorch's fp32.

Both run with as many intra-op threads as torch has (``torch.get_num_threads()``), so timing one
against the other (``runtime_auto``) compares like for like.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("onnx", "openvino")
OPSET = 17
FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
# what, besides the library version, decides the files (part of the cache fingerprint)
FORMAT = {"onnx": f"opset{OPSET}", "openvino": f"opset{OPSET}-ovc-fp32"}
INSTALL = {"onnx": "pip install onnxruntime", "openvino": "pip install openvino"}


class RuntimeUnavailable(Exception):
    """The runtime's library cannot be imported here (the message says how to install it)."""


def library(runtime: str) -> Any:
    """The runtime's module (onnxruntime / openvino), or ``RuntimeUnavailable`` in one line."""
    try:
        if runtime == "onnx":
            import onnxruntime

            return onnxruntime
        from autolabel.runtime import import_openvino

        return import_openvino()
    except ImportError as exc:
        raise RuntimeUnavailable(f"{runtime} is not importable ({exc}): {INSTALL[runtime]}") from None


def library_version(runtime: str) -> str:
    return str(library(runtime).__version__)


def threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def export(spec: Any, runtime: str, folder: Path, onnx_file: Path | None = None) -> None:
    """Write the runtime's ``FILES`` for ``spec`` (a ``runtime_cache.ExportSpec``) into ``folder``.

    OpenVINO converts ``onnx_file`` (the valid cached ONNX export of the same spec) when given,
    else a fresh ONNX export made for the conversion and deleted after it.
    """
    if runtime == "onnx":
        export_onnx(spec, folder / "model.onnx")
        return
    ov = library("openvino")
    intermediate = folder / "intermediate.onnx"
    if onnx_file is None:
        export_onnx(spec, intermediate)
    try:
        model = ov.convert_model(str(onnx_file or intermediate))
        ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    finally:
        intermediate.unlink(missing_ok=True)


def export_onnx(spec: Any, path: Path) -> None:
    import torch

    library("onnx")
    partial = path.with_name(path.name + ".partial")
    with torch.inference_mode(False), torch.no_grad(), spec.export_context():
        torch.onnx.export(
            spec.module,
            spec.example_inputs,
            str(partial),
            dynamo=False,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_axes={key: dict(value) for key, value in spec.dynamic_axes.items()},
            opset_version=OPSET,
        )
    os.replace(partial, path)


class Graph:
    """An exported graph ready to run: ``run({name: array}) -> [output arrays]``."""

    runtime: str

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxGraph(Graph):
    runtime = "onnx"

    def __init__(self, path: Path):
        ort = library("onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(out) for out in self.session.run(None, dict(feeds))]


class OpenvinoGraph(Graph):
    runtime = "openvino"

    def __init__(self, path: Path):
        ov = library("openvino")
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads()}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.request.infer(dict(feeds))
        return [
            np.array(self.request.get_output_tensor(index).data)
            for index in range(len(self.compiled.outputs))
        ]


def open_graph(runtime: str, folder: Path) -> Graph:
    if runtime == "onnx":
        return OnnxGraph(folder / "model.onnx")
    return OpenvinoGraph(folder / "model.xml")


def precision_note(runtime: str) -> dict:
    """What the runtime computes in (recorded with the parity figures)."""
    if runtime != "openvino":
        return {}
    core = library("openvino").Core()
    default = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    return {
        "inference_precision": "f32",
        "cpu_default_precision": str(getattr(default, "get_type_name", lambda: default)()),
    }
