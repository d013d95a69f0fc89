"""Which runtime a proposer's image side runs in: ``torch``, ``onnx``, ``openvino`` or ``auto``.

- ``torch``: PyTorch eager, nothing exported.
- ``onnx`` / ``openvino``: the export cached by ``runtime_cache`` (exported and parity-checked the
  first time); when it cannot be used (export or parity failed, library missing, not a CPU fp32
  model) one line on stderr says why and PyTorch runs.
- ``auto`` (the default): on the CPU, the fastest runtime that passes parity here. The first time,
  each candidate is exported and parity-checked, then timed on the parity inputs (best of
  ``TIMING_RUNS``) next to PyTorch; the choice is recorded in ``choice.json`` in its own cache
  folder (per backend, weights, input size, device) and reused, without exporting or timing again,
  while the weights, settings and library versions match. On CUDA (or any non-CPU device) auto
  means torch: the ONNX and OpenVINO exports here are CPU fp32 graphs. One line on stderr always
  says what auto chose and why.

``parity_figures`` and ``detections_differ`` are the two halves of every export-time parity check
(raw outputs, then the detections at the configured thresholds).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel.proposers import runtime_cache, runtime_graphs

if TYPE_CHECKING:
    import supervision as sv

CHOICE = "choice.json"
TIMING_RUNS = 2
RUNTIMES = ("torch", "auto", *runtime_graphs.RUNTIMES)


@dataclass(frozen=True)
class RuntimeSelection:
    """The runtime a proposer runs (``used``), its graph (None: torch), and the line that said why."""

    used: str
    graph: Any | None = None  # runtime_graphs.Graph
    cached: runtime_cache.CachedRuntime | None = None  # the export asked for or chosen
    note: str | None = None
    choice: dict = field(default_factory=dict)  # auto's record


TORCH = RuntimeSelection("torch")


def select_runtime(
    *,
    name: str,
    asked: str,
    device: str,
    cpu_fp32: bool,
    make_spec: Callable[[], runtime_cache.ExportSpec],
    parity: runtime_cache.ParityCheck,
    run_torch: Callable[[], Any],
    run_graph: Callable[[Any], Any],
) -> RuntimeSelection:
    """The runtime to use for ``asked``; prints the one line when it is not what was asked or is auto.

    ``run_torch`` / ``run_graph(graph)`` run the parity inputs once (auto times them).
    """
    if asked == "torch":
        return TORCH
    if not cpu_fp32:
        reason = f"the ONNX/OpenVINO exports run fp32 on the CPU, not on {device}"
        if asked == "auto":
            return announce(RuntimeSelection("torch", note=f"{name}: runtime auto -> torch ({reason})"))
        return announce(RuntimeSelection("torch", note=fallback_line(name, asked, reason)))
    spec = make_spec()
    base = runtime_cache.base_fingerprint(spec)
    if asked != "auto":
        cached = runtime_cache.cached_export(spec, asked, parity, base=base)
        if cached.reason:
            return announce(
                RuntimeSelection("torch", cached=cached, note=fallback_line(name, asked, cached.reason))
            )
        return RuntimeSelection(asked, cached.session, cached)
    return announce(choose(name, spec, base, device, parity, run_torch, run_graph))


def fallback_line(name: str, asked: str, reason: str) -> str:
    return f"{name}: runtime {asked} not used ({reason}); running torch"


def announce(selection: RuntimeSelection) -> RuntimeSelection:
    if selection.note:
        print(selection.note, file=sys.stderr)
    return selection


def choice_key(base: str, device: str) -> str:
    versions = []
    for runtime in runtime_graphs.RUNTIMES:
        try:
            versions.append(f"{runtime}={runtime_graphs.library_version(runtime)}")
        except runtime_graphs.RuntimeUnavailable:
            versions.append(f"{runtime}=missing")
    return hashlib.sha256(f"{base}:{device}:{','.join(versions)}".encode()).hexdigest()


def choose(name, spec, base, device, parity, run_torch, run_graph) -> RuntimeSelection:
    """auto on the CPU: the recorded choice when it still holds, else export, check, time, record."""
    path = runtime_cache.cache_dir(spec, "auto") / CHOICE
    with runtime_cache.locked(path.parent):  # one worker chooses, the others read its record
        return recorded_or_chosen(name, spec, base, device, parity, run_torch, run_graph, path)


def recorded_or_chosen(name, spec, base, device, parity, run_torch, run_graph, path) -> RuntimeSelection:
    key = choice_key(base, device)
    record = runtime_cache.read_json(path)
    if record.get("fingerprint") == key and record.get("chosen") in RUNTIMES:
        chosen = record["chosen"]
        summary = f"recorded in {path}: {timing_text(record)}"
        if chosen == "torch":
            return RuntimeSelection("torch", note=f"{name}: runtime auto -> torch ({summary})", choice=record)
        cached = runtime_cache.cached_export(spec, chosen, parity, base=base)
        if cached.session is not None:
            note = f"{name}: runtime auto -> {chosen} ({summary})"
            return RuntimeSelection(chosen, cached.session, cached, note, record)
    seconds = {"torch": best_seconds(run_torch)}
    not_used: dict[str, str] = {}
    exports: dict[str, runtime_cache.CachedRuntime] = {}
    for runtime in runtime_graphs.RUNTIMES:
        cached = runtime_cache.cached_export(spec, runtime, parity, base=base)
        if cached.session is None:
            not_used[runtime] = cached.reason or "unavailable"
            continue
        exports[runtime] = cached
        seconds[runtime] = best_seconds(lambda graph=cached.session: run_graph(graph))
    chosen = min(seconds, key=seconds.__getitem__)
    record = {
        "fingerprint": key,
        "chosen": chosen,
        "device": device,
        "threads": runtime_graphs.threads(),
        "seconds": {runtime: round(value, 4) for runtime, value in seconds.items()},
        "not_used": not_used,
        "timed_on": f"the parity inputs, best of {TIMING_RUNS}",
    }
    runtime_cache.write_json(path, record)
    note = f"{name}: runtime auto -> {chosen} (fastest passing parity here: {timing_text(record)}; recorded in {path})"
    cached = exports.get(chosen)
    return RuntimeSelection(chosen, cached.session if cached else None, cached, note, record)


def timing_text(record: Mapping) -> str:
    parts = [f"{runtime} {value:.3g} s" for runtime, value in record.get("seconds", {}).items()]
    parts += [f"{runtime} not used: {reason}" for runtime, reason in record.get("not_used", {}).items()]
    return ", ".join(parts)


def best_seconds(run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(TIMING_RUNS):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


# ---------------------------------------------------------------- parity


def raw_diff(expected: np.ndarray, got: np.ndarray) -> float:
    """Max absolute difference; equal values (infinities included) count 0, NaN counts inf."""
    expected = np.asarray(expected, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if expected.shape != got.shape:
        return float("inf")
    diff = np.where(expected == got, 0.0, np.abs(expected - got))
    diff = np.nan_to_num(diff, nan=np.inf)
    return float(diff.max()) if diff.size else 0.0


def parity_figures(
    expected: Sequence[np.ndarray], got: Sequence[np.ndarray], limits: Mapping[str, float]
) -> tuple[str | None, dict]:
    """Raw outputs (``limits``: output name -> tolerance, in the outputs' order) -> (reason, figures)."""
    figures: dict = {}
    failed = []
    for (output, limit), want, have in zip(limits.items(), expected, got):
        figures[f"max_{output}_diff"] = diff = raw_diff(want, have)
        if not diff <= limit:
            failed.append(f"{output} differ by {diff:.2g} (limit {limit:g})")
    return (f"parity failed: {', '.join(failed)}" if failed else None), figures


def detections_differ(
    expected: Sequence[sv.Detections], got: Sequence[sv.Detections], *, pixel_atol: float, score_atol: float
) -> str | None:
    """None when every image has the same detections (class, box within ``pixel_atol``, score within
    ``score_atol``); else the one-line reason."""
    for row, (want, have) in enumerate(zip(expected, got)):
        same = len(want) == len(have) and (want.class_id == have.class_id).all()
        same = same and np.allclose(want.xyxy, have.xyxy, atol=pixel_atol)
        same = same and np.allclose(want.confidence, have.confidence, atol=score_atol)
        if not same:
            return f"parity failed: image {row} gives {len(have)} detections, PyTorch {len(want)}"
    return None
