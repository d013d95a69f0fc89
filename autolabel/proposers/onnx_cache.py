"""A proposer's model exported to ONNX once, cached, checked against PyTorch, reused when valid.

One cache folder per (backend, weights source, runtime, input size) under ``cache_root()``
(``AUTOLABEL_EXPORT_CACHE``, else ``$HF_HOME/autolabel-exports``: beside the Hugging Face cache the
weights come from). It holds ``model.onnx`` and ``meta.json``:

- ``fingerprint``: sha256 of the weights' tensors (names, dtypes, shapes, bytes) and the export
  settings (opset, input size, library versions). Different weights at the same source: stale,
  re-exported.
- ``onnx_sha256``: the exported file's hash. A truncated or edited file: corrupt, re-exported.
- ``parity``: the check run at export time (``ParityCheck``), or the reason it failed. A failed
  export or parity is remembered for that fingerprint and the runtime is not used (the caller falls
  back to PyTorch and prints the reason in one line) until the weights or settings change.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

META = "meta.json"
MODEL = "model.onnx"
OPSET = 17


@dataclass(frozen=True, kw_only=True)
class ExportSpec:
    """What to export: a torch module, example inputs, and the names/dynamic axes of its graph."""

    name: str  # backend, e.g. "owlv2"
    source: str  # the weights' folder or hub id (one cache folder each)
    input_size: tuple[int, int]  # (height, width) the image side runs at
    module: Any  # torch.nn.Module
    example_inputs: tuple[Any, ...]
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    settings: Mapping[str, Any] = field(default_factory=dict)  # anything else the graph depends on


@dataclass(frozen=True)
class CachedRuntime:
    """The outcome: a session to run, or the one-line reason there is none; and whether it was built."""

    session: Any | None  # onnxruntime.InferenceSession
    reason: str | None
    built: bool  # False: reused from the cache
    path: Path
    parity: dict | None = None


# session -> None when the runtime matches PyTorch, else a one-line reason; plus the figures
ParityCheck = Callable[[Any], tuple[str | None, dict]]


def cache_root() -> Path:
    explicit = os.environ.get("AUTOLABEL_EXPORT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(hf_home).expanduser() / "autolabel-exports"


def weights_fingerprint(module: Any) -> str:
    """sha256 over the module's state dict: the weights' values decide, not where they came from."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return digest.hexdigest()


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def spec_fingerprint(spec: ExportSpec) -> str:
    import onnxruntime
    import torch
    import transformers

    settings = {
        "input_size": list(spec.input_size),
        "opset": OPSET,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        **{key: spec.settings[key] for key in sorted(spec.settings)},
    }
    text = weights_fingerprint(spec.module) + json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir(spec: ExportSpec, runtime: str) -> Path:
    source_hash = hashlib.sha256(spec.source.encode()).hexdigest()[:10]
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(spec.source).name)[:40]
    height, width = spec.input_size
    return cache_root() / f"{spec.name}-{slug}-{source_hash}-{runtime}-{height}x{width}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_onnx(spec: ExportSpec, parity: ParityCheck) -> CachedRuntime:
    """The valid cached export of ``spec``, or a fresh one (exported, parity-checked, recorded)."""
    folder = cache_dir(spec, "onnx")
    fingerprint = spec_fingerprint(spec)
    meta = read_meta(folder)
    if meta.get("fingerprint") == fingerprint:
        if meta.get("reason"):
            return CachedRuntime(None, meta["reason"], False, folder, meta.get("parity"))
        session = open_valid_session(folder / MODEL, meta.get("onnx_sha256"))
        if session is not None:
            return CachedRuntime(session, None, False, folder, meta.get("parity"))
    return export_and_check(spec, parity, folder, fingerprint)


def open_valid_session(model: Path, expected_sha256: str | None) -> Any | None:
    """A session on ``model`` when it is the file recorded at export; None when missing or corrupt."""
    if not model.is_file() or file_sha256(model) != expected_sha256:
        return None
    try:
        return open_session(model)
    except Exception:  # noqa: BLE001 - an unreadable file is rebuilt by the caller
        return None


def read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def export_and_check(spec: ExportSpec, parity: ParityCheck, folder: Path, fingerprint: str) -> CachedRuntime:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / MODEL
    partial = folder / (MODEL + ".partial")
    reason, figures, session = None, None, None
    try:
        with torch.inference_mode(False), torch.no_grad():
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
        os.replace(partial, model)
        session = open_session(model)
        reason, figures = parity(session)
    except Exception as exc:  # noqa: BLE001 - any export failure means "not this runtime"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = f"export failed: {first_line[:200]}"
    meta = {
        "fingerprint": fingerprint,
        "source": spec.source,
        "input_size": list(spec.input_size),
        "onnx_sha256": file_sha256(model) if model.is_file() else None,
        "parity": figures,
        "reason": reason,
    }
    write_meta(folder, meta)
    return CachedRuntime(None if reason else session, reason, True, folder, figures)


def write_meta(folder: Path, meta: dict) -> None:
    tmp = folder / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, folder / META)


def open_session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
