"""Inference latency of the student: PyTorch eager vs ONNX Runtime (vs TensorRT on a GPU).

A runner is a zero-argument callable that runs one forward pass on a fixed input. Backends are
timed side by side in interleaved blocks, so a noisy shared machine slows them all alike;
reported numbers are the median and 90th percentile of all timed calls after warm-up.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autolabel.errors import AutolabelError

Runner = Callable[[], object]


@dataclass(frozen=True, kw_only=True)
class LatencyStats:
    backend: str
    device: str
    file: str | None
    batch: int
    imgsz: int
    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    speedup: float | None = None  # PyTorch eager median on the same device / this median

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Backend:
    name: str  # 'pytorch', 'onnxruntime', 'tensorrt', 'openvino'
    device: str
    make_runner: Callable[[int], Runner]  # batch size -> runner; raises Unsupported when it cannot
    file: str | None = None


class Unsupported(Exception):
    """This backend cannot run this batch size (e.g. a static-batch export); the message says why."""


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timing samples")
    return {
        "median_ms": float(np.median(values)),
        "p90_ms": float(np.percentile(values, 90)),
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
    }


def time_interleaved(
    runners: dict[str, Runner],
    *,
    runs: int = 50,
    warmup: int = 10,
    blocks: int = 5,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Milliseconds per call for each runner: warm-up, then ``runs`` calls in ``blocks`` rounds.

    Each round times every runner in turn, so drifting background load touches them all.
    """
    if runs < 1 or blocks < 1:
        raise ValueError("runs and blocks must be positive")
    for runner in runners.values():
        for _ in range(warmup):
            runner()
        if sync:
            sync()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    per_block = [runs // blocks + (1 if b < runs % blocks else 0) for b in range(blocks)]
    for count in per_block:
        for name, runner in runners.items():
            for _ in range(count):
                start = clock()
                runner()
                if sync:
                    sync()
                samples[name].append((clock() - start) * 1000.0)
    return samples


def benchmark(
    backends: Sequence[Backend],
    *,
    imgsz: int,
    batches: Sequence[int] = (1,),
    runs: int = 50,
    warmup: int = 10,
) -> tuple[list[LatencyStats], list[str]]:
    """Latency rows for every backend and batch size, plus notes on the ones that were skipped."""
    rows: list[LatencyStats] = []
    notes: list[str] = []
    sync = _cuda_sync if any(b.device.startswith("cuda") for b in backends) else None
    for batch in batches:
        runners: dict[str, Runner] = {}
        by_key = {}
        for backend in backends:
            key = f"{backend.name}@{backend.device}:{backend.file}"
            try:
                runners[key] = backend.make_runner(batch)
                by_key[key] = backend
            except Unsupported as exc:
                notes.append(f"{backend.name} ({backend.device}) batch {batch}: {exc}")
        samples = time_interleaved(runners, runs=runs, warmup=warmup, sync=sync)
        batch_rows = [
            LatencyStats(
                backend=by_key[key].name,
                device=by_key[key].device,
                file=by_key[key].file,
                batch=batch,
                imgsz=imgsz,
                runs=len(ms),
                **summarize(ms),
            )
            for key, ms in samples.items()
        ]
        rows += with_speedups(batch_rows)
    return rows, notes


def with_speedups(rows: Sequence[LatencyStats]) -> list[LatencyStats]:
    """Fill ``speedup`` = PyTorch eager median on the same device and batch / the row's median."""
    eager = {(r.device, r.batch): r.median_ms for r in rows if r.backend == "pytorch"}
    out = []
    for r in rows:
        base = eager.get((r.device, r.batch))
        out.append(LatencyStats(**{**asdict(r), "speedup": None if base is None else base / r.median_ms}))
    return out


def machine_info() -> dict:
    import onnxruntime
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


# -- runners ------------------------------------------------------------------------------------
def pytorch_backend(weights: Path, imgsz: int, device: str = "cpu") -> Backend:
    """The student's eval-mode network in eager mode (``Student.torch_module``: YOLO's fused
    DetectionModel as ``YOLO.predict`` runs it, D-FINE's raw-output module), fp32."""

    def make(batch: int) -> Runner:
        import torch

        from autolabel import students

        model = students.load(weights).torch_module(device)
        x = torch.rand(batch, 3, imgsz, imgsz, device=device)

        def run():
            with torch.inference_mode():
                return model(x)

        return run

    return Backend(name="pytorch", device=device, make_runner=make, file=Path(weights).name)


def onnxruntime_backend(onnx_path: Path, imgsz: int, threads: int | None = None) -> Backend:
    """ONNX Runtime on ``onnx_path``; ``threads`` intra-op threads (its default: one per core)."""
    from autolabel.exported.runtimes import onnx_session

    session = onnx_session(onnx_path, threads=threads)
    device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def make(batch: int) -> Runner:
        spec = session.get_inputs()[0]
        fixed = spec.shape[0]
        if isinstance(fixed, int) and fixed != batch:
            raise Unsupported(f"{Path(onnx_path).name} has a fixed batch of {fixed} (export with --dynamic)")
        dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
        x = np.random.default_rng(0).random((batch, 3, imgsz, imgsz)).astype(dtype)
        return lambda: session.run(None, {spec.name: x})

    return Backend(name="onnxruntime", device=device, make_runner=make, file=Path(onnx_path).name)


def openvino_backend(folder: Path, imgsz: int, threads: int | None = None) -> Backend:
    """OpenVINO on the CPU with ultralytics' LATENCY hint and ``threads`` inference threads (its
    default: all cores) at its default inference precision (bf16 on CPUs that have it)."""

    def make(batch: int) -> Runner:
        from autolabel.runtime import import_openvino

        xml = next(Path(folder).glob("*.xml"))
        config = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        compiled = import_openvino().Core().compile_model(str(xml), "CPU", config)
        first = compiled.input(0).get_partial_shape()[0]
        if first.is_static and first.get_length() != batch:
            fixed = first.get_length()
            raise Unsupported(f"{Path(folder).name} has a fixed batch of {fixed} (export with --dynamic)")
        request = compiled.create_infer_request()
        x = np.random.default_rng(0).random((batch, 3, imgsz, imgsz)).astype(np.float32)
        return lambda: request.infer({0: x})

    return Backend(name="openvino", device="cpu", make_runner=make, file=Path(folder).name)


def autobackend_backend(name: str, path: Path, imgsz: int, device: str, half: bool) -> Backend:
    """TensorRT engines through ultralytics' AutoBackend."""

    def make(batch: int) -> Runner:
        import torch

        from autolabel.exported.runtimes import autobackend

        backend = autobackend(path, device, half)
        if batch != 1 and not getattr(backend, "dynamic", False):
            raise Unsupported(f"{Path(path).name} has a fixed batch of 1 (export with --dynamic)")
        x = torch.rand(batch, 3, imgsz, imgsz, device=device)
        x = x.half() if half else x

        def run():
            with torch.inference_mode():
                return backend(x)

        return run

    return Backend(name=name, device=device, make_runner=make, file=Path(path).name)


def backends_for(
    reference: Path,
    exports: Sequence[dict],
    out_dir: Path,
    imgsz: int,
    *,
    cuda: bool | None = None,
    threads: int | None = None,
) -> tuple[list[Backend], list[str]]:
    """PyTorch eager (CPU, and CUDA when a GPU is there) plus one backend per exported file."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    backends = [pytorch_backend(reference, imgsz, "cpu")]
    notes = []
    if cuda:
        backends.append(pytorch_backend(reference, imgsz, "cuda"))
    for entry in exports:
        path = out_dir / entry["file"]
        fmt, half = entry["format"], entry["options"]["half"]
        if not path.exists():
            notes.append(f"{entry['file']}: listed in the manifest but missing on disk")
        elif fmt == "onnx":
            backends.append(onnxruntime_backend(path, imgsz, threads))
        elif fmt == "engine" and cuda:
            backends.append(autobackend_backend("tensorrt", path, imgsz, "cuda", half))
        elif fmt == "engine":
            notes.append(f"{entry['file']}: TensorRT needs a CUDA GPU, none is available here")
        elif fmt == "openvino":
            from autolabel.exported.runtimes import openvino_precision_note

            backends.append(openvino_backend(path, imgsz, threads))
            if note := openvino_precision_note():
                notes.append(f"{entry['file']}: {note}")
    if len(backends) == 1 + int(cuda):
        raise AutolabelError("nothing exported to benchmark: run 'autolabel export --format onnx' first")
    return backends, notes


def same_threads(threads: int | None = None) -> int:
    """Give PyTorch ``threads`` CPU threads (default: its current count) and return the count."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def bench_exports(
    out_dir: Path,
    *,
    imgsz: int | None = None,
    batches: Sequence[int] = (1,),
    runs: int = 50,
    warmup: int = 10,
    cuda: bool | None = None,
    threads: int | None = None,
) -> dict:
    """Time the PyTorch reference (``model.pt``, or D-FINE's ``model/``) against every exported file in
    ``out_dir``; writes and returns ``latency.json``.

    PyTorch and ONNX Runtime get the same CPU threads: ``threads``, or PyTorch's current setting
    (ultralytics sets OMP_NUM_THREADS=1 on import when it is unset, which makes that 1).
    """
    import json

    from autolabel.exported.manifest import LATENCY_JSON, read_manifest, reference_weights

    manifest = read_manifest(out_dir)
    reference = reference_weights(out_dir, manifest)
    exports = list(manifest["exports"].values())
    if not reference.is_file() or not exports:
        raise AutolabelError(f"nothing exported in {out_dir}: run 'autolabel export --format onnx' first")
    imgsz = imgsz or exports[-1]["options"]["imgsz"]
    notes = [
        f"{e['file']}: exported at {e['options']['imgsz']} px, not {imgsz}"
        for e in exports
        if e["options"]["imgsz"] != imgsz
    ]
    exports = [e for e in exports if e["options"]["imgsz"] == imgsz]
    threads = same_threads(threads)
    backends, missing = backends_for(reference, exports, out_dir, imgsz, cuda=cuda, threads=threads)
    rows, skipped = benchmark(backends, imgsz=imgsz, batches=batches, runs=runs, warmup=warmup)
    result = {
        "imgsz": imgsz,
        "runs": runs,
        "warmup": warmup,
        "batches": list(batches),
        "cpu_threads": threads,
        "machine": machine_info(),
        "rows": [r.to_dict() for r in rows],
        "notes": notes + missing + skipped,
    }
    (out_dir / LATENCY_JSON).write_text(json.dumps(result, indent=2))
    return result
