"""The files next to an export: ``exports.json`` (one entry per exported file) and ``latency.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autolabel.exported.options import ExportOptions
    from autolabel.exported.parity import ParityReport

REFERENCE_WEIGHTS = "model.pt"
MANIFEST = "exports.json"
LATENCY_JSON = "latency.json"


def read_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {"exports": {}}


def record_export(out_dir: Path, exported: Path, options: ExportOptions, parity: ParityReport | None) -> dict:
    """Add (or replace) this exported file's entry in ``exports.json``; returns the manifest."""
    manifest = read_manifest(out_dir)
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


def read_latency(out_dir: Path) -> dict | None:
    """``latency.json`` as ``autolabel bench`` wrote it; None when not measured yet."""
    path = out_dir / LATENCY_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
