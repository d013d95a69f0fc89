"""The files next to an export: ``exports.json`` (one entry per exported file, and which file is the
PyTorch reference they were checked against) and ``latency.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autolabel.exported.options import ExportOptions
    from autolabel.exported.parity import ParityReport

REFERENCE_WEIGHTS = "model.pt"  # the reference of a manifest that names none (YOLO, written before D-FINE)
MANIFEST = "exports.json"
LATENCY_JSON = "latency.json"


def read_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {"exports": {}}


def record_export(
    out_dir: Path,
    exported: Path,
    options: ExportOptions,
    parity: ParityReport | None,
    *,
    reference: Path | None = None,
) -> dict:
    """Add (or replace) this exported file's entry in ``exports.json``; returns the manifest.
    ``reference``: the PyTorch weights in ``out_dir`` the export came from."""
    manifest = read_manifest(out_dir)
    if reference is not None:
        manifest["reference"] = reference.relative_to(out_dir).as_posix()
    manifest["exports"][exported.name] = {
        "file": exported.name,
        "format": options.format,
        "options": asdict(options),
        "size_bytes": _size(exported),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parity": parity.to_dict() if parity else None,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def reference_weights(out_dir: Path, manifest: dict | None = None) -> Path:
    """The PyTorch weights the exports in ``out_dir`` were checked against."""
    manifest = manifest if manifest is not None else read_manifest(out_dir)
    return out_dir / manifest.get("reference", REFERENCE_WEIGHTS)


def read_latency(out_dir: Path) -> dict | None:
    """``latency.json`` as ``autolabel bench`` wrote it; None when not measured yet."""
    path = out_dir / LATENCY_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
