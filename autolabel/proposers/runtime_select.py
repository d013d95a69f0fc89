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

The export-time parity checks themselves are ``runtime_parity``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autolabel.proposers import runtime_cache, runtime_graphs

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
