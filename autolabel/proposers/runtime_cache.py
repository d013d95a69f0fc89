"""A proposer's model exported once per accelerated runtime, cached, checked against PyTorch, reused.

One cache folder per (backend, weights source, runtime, input size) under ``cache_root()``
(``AUTOLABEL_EXPORT_CACHE``, else ``$HF_HOME/autolabel-exports``: beside the Hugging Face cache the
weights come from). It holds the runtime's files (``runtime_graphs``: ``model.onnx`` for ONNX
Runtime, ``model.xml`` + ``model.bin`` for OpenVINO) and ``meta.json``:

- ``fingerprint``: sha256 of the weights' tensors (names, dtypes, shapes, bytes), the export
  settings (input size, anything the graph depends on, e.g. the caption it was traced with) and the
  library versions (torch, transformers, the runtime's own). Different weights at the same source:
  stale, re-exported.
- ``files``: each file's sha256. A truncated or edited file: corrupt, re-exported.
- ``parity``: the check run at export time (``ParityCheck``), or the reason it failed. A failed
  export or parity is remembered for that fingerprint and the runtime is not used (the caller falls
  back to PyTorch and prints the reason in one line) until the weights or settings change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.errors import first_line
from autolabel.proposers import runtime_graphs

META = "meta.json"


@dataclass(frozen=True, kw_only=True)
class ExportSpec:
    """What to export: a torch module, example inputs, and the names/dynamic axes of its graph."""

    name: str  # backend, e.g. "owlv2"
    source: str  # the weights' folder or hub id (one cache folder each)
    input_size: tuple[int, int]  # (height, width) the exported graph runs at
    module: Any  # torch.nn.Module
    example_inputs: tuple[Any, ...]
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    settings: Mapping[str, Any] = field(default_factory=dict)  # anything else the graph depends on
    variant: str = ""  # one cache folder per variant too (e.g. the caption baked into the graph)
    # entered around the export (e.g. constants the tracer must see as constants)
    export_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass(frozen=True)
class CachedRuntime:
    """The outcome: a graph to run, or the one-line reason there is none; and whether it was built."""

    session: Any | None  # runtime_graphs.Graph
    reason: str | None
    built: bool  # False: reused from the cache
    path: Path
    parity: dict | None = None


# graph -> None when the runtime matches PyTorch, else a one-line reason; plus the figures
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
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def base_fingerprint(spec: ExportSpec) -> str:
    """The weights and everything the graph depends on, whatever the runtime."""
    import torch
    import transformers

    settings = {
        "input_size": list(spec.input_size),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **{key: spec.settings[key] for key in sorted(spec.settings)},
    }
    text = weights_fingerprint(spec.module) + json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def runtime_fingerprint(base: str, runtime: str) -> str:
    """``base`` plus the runtime, its library version and the export settings of its files."""
    text = f"{base}:{runtime}:{runtime_graphs.library_version(runtime)}:{runtime_graphs.FORMAT[runtime]}"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir(spec: ExportSpec, runtime: str) -> Path:
    source_hash = hashlib.sha256(spec.source.encode()).hexdigest()[:10]
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(spec.source).name)[:40]
    height, width = spec.input_size
    variant = f"-{spec.variant}" if spec.variant else ""
    return cache_root() / f"{spec.name}-{slug}-{source_hash}{variant}-{runtime}-{height}x{width}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_export(
    spec: ExportSpec, runtime: str, parity: ParityCheck, *, base: str | None = None
) -> CachedRuntime:
    """The valid cached export of ``spec`` for ``runtime``, or a fresh one (exported, checked, recorded).

    ``base``: ``base_fingerprint(spec)`` when the caller already has it (hashing large weights
    takes a second or two). A runtime whose library cannot be imported is a reason, not an error.
    """
    folder = cache_dir(spec, runtime)
    try:
        fingerprint = runtime_fingerprint(base or base_fingerprint(spec), runtime)
    except runtime_graphs.RuntimeUnavailable as exc:
        return CachedRuntime(None, str(exc), False, folder)
    with locked(folder):  # several workers (Ray actors) may build the same proposer at once
        return cached_or_exported(spec, runtime, parity, folder, fingerprint, base)


def locked(folder: Path) -> Any:
    """An inter-process lock beside ``folder`` (filelock, which huggingface_hub already uses)."""
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder) + ".lock")


def cached_or_exported(
    spec: ExportSpec, runtime: str, parity: ParityCheck, folder: Path, fingerprint: str, base: str | None
) -> CachedRuntime:
    meta = read_meta(folder)
    if meta.get("fingerprint") == fingerprint:
        if meta.get("reason"):
            return CachedRuntime(None, meta["reason"], False, folder, meta.get("parity"))
        graph = open_valid_graph(runtime, folder, meta.get("files"))
        if graph is not None:
            return CachedRuntime(graph, None, False, folder, meta.get("parity"))
    return export_and_check(spec, runtime, parity, folder, fingerprint, valid_onnx(spec, runtime, base))


def valid_onnx(spec: ExportSpec, runtime: str, base: str | None) -> Path | None:
    """The cached ONNX file of ``spec`` when it is valid and passed parity (OpenVINO converts it)."""
    if runtime == "onnx" or base is None:
        return None
    folder = cache_dir(spec, "onnx")
    meta = read_meta(folder)
    try:
        current = meta.get("fingerprint") == runtime_fingerprint(base, "onnx")
    except runtime_graphs.RuntimeUnavailable:
        return None
    files = meta.get("files") or {}
    model = folder / "model.onnx"
    if not current or meta.get("reason") or not model.is_file():
        return None
    return model if file_sha256(model) == files.get("model.onnx") else None


def open_valid_graph(runtime: str, folder: Path, files: Mapping[str, str] | None) -> Any | None:
    """The graph in ``folder`` when its files are those recorded at export; None when missing or corrupt."""
    if not files or set(files) != set(runtime_graphs.FILES[runtime]):
        return None
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != expected:
            return None
    try:
        return runtime_graphs.open_graph(runtime, folder)
    except Exception:  # noqa: BLE001 - an unreadable file is rebuilt by the caller
        return None


def read_meta(folder: Path) -> dict:
    return read_json(folder / META)


def read_json(path: Path) -> dict:
    """A json object from ``path``; {} when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def export_and_check(
    spec: ExportSpec,
    runtime: str,
    parity: ParityCheck,
    folder: Path,
    fingerprint: str,
    onnx_file: Path | None = None,
) -> CachedRuntime:
    import time

    shutil.rmtree(folder, ignore_errors=True)  # whatever was there is stale or corrupt
    folder.mkdir(parents=True, exist_ok=True)
    reason, figures, graph = None, None, None
    started = time.perf_counter()
    try:
        runtime_graphs.export(spec, runtime, folder, onnx_file)
        export_s = time.perf_counter() - started
        graph = runtime_graphs.open_graph(runtime, folder)
        reason, figures = parity(graph)
        figures = {**figures, "export_s": round(export_s, 2), **runtime_graphs.precision_note(runtime)}
    except Exception as exc:  # noqa: BLE001 - any export failure means "not this runtime"
        reason = f"export failed: {first_line(exc)[:200]}"
    files = {
        name: file_sha256(folder / name)
        for name in runtime_graphs.FILES[runtime]
        if (folder / name).is_file()
    }
    meta = {
        "fingerprint": fingerprint,
        "runtime": runtime,
        "source": spec.source,
        "input_size": list(spec.input_size),
        "files": files,
        "converted_from": str(onnx_file) if onnx_file else None,
        "parity": figures,
        "reason": reason,
    }
    write_json(folder / META, meta)
    return CachedRuntime(None if reason else graph, reason, True, folder, figures)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
