"""Export the trained student (ONNX, TensorRT, OpenVINO) and prove it matches.

Every export lands in ``exports/<run-id>/`` next to a copy of the PyTorch weights (the student's
``reference_name``: ``model.pt`` for YOLO, the ``model/`` save_pretrained folder for D-FINE) and a
manifest (``exports.json``) with the options and the parity report of each exported file
(``autolabel.exported.parity``); the model card is (re)written after each export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel.errors import AutolabelError, first_line
from autolabel.exported.manifest import record_export
from autolabel.exported.options import ExportOptions, check_exporter
from autolabel.exported.parity import ParityReport, check_parity, parity_images

if TYPE_CHECKING:
    from autolabel.store import Store


# -- exporting ----------------------------------------------------------------------------------
def export_weights(
    weights: Path, out_dir: Path, options: ExportOptions, *, calibration: Path | None = None
) -> Path:
    """Copy ``weights`` into ``out_dir`` as the student's reference and export it as
    ``out_dir/<options.stem>`` (+ the format's suffix); returns the exported file or folder.

    ``calibration``: a YOLO data.yaml whose *train* split calibrates an ``int8`` export (ultralytics
    runs ONNX Runtime's static quantization over it; only convolutions and matmuls are quantized,
    so the box decode stays float).
    """
    from autolabel import students

    check_exporter(options.format)
    student_class = students.backend_class(students.backend_of(weights))
    student_class.check_export(options)
    if options.int8 and calibration is None:
        raise AutolabelError("--int8 needs calibration images: the student's training set was not found")
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = student_class.copy_reference(weights, out_dir)
    try:
        return student_class.load(reference).export(options, out_dir / options.stem, calibration=calibration)
    except AutolabelError:
        raise
    except Exception as exc:  # ultralytics raises bare exceptions for missing toolchains
        raise AutolabelError(f"{options.format} export failed: {first_line(exc)}") from exc


def reference_of(weights: Path, out_dir: Path) -> Path:
    """Where ``export_weights`` keeps the PyTorch reference of ``weights`` in ``out_dir``."""
    from autolabel import students

    return out_dir / students.backend_class(students.backend_of(weights)).reference_name


# -- the command's work -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ExportResult:
    run_id: int
    out_dir: Path
    exported: Path
    parity: ParityReport | None
    card: Path


def calibration_data(store: Store, image_root: Path, weights: Path, out_dir: Path) -> Path:
    """The data.yaml the run trained on (``runs/run-N/data``), else one built from the current split."""
    trained_on = weights.parent.parent / "data" / "data.yaml"
    if trained_on.is_file():
        return trained_on
    from autolabel.train import collect_dataset, write_yolo_dataset

    snapshot = collect_dataset(store)
    if not snapshot.train:
        raise AutolabelError("--int8 needs calibration images and the store has no training images")
    return write_yolo_dataset(snapshot, image_root, out_dir / "calibration")


def export_dir(exports_root: Path, run_id: int) -> Path:
    return exports_root / str(run_id)


def export_student(
    store: Store,
    *,
    workspace_root: Path,
    image_root: Path,
    exports_root: Path,
    options: ExportOptions,
    run_id: int | None = None,
    conf: float | None = None,
    parity_limit: int | None = None,
) -> ExportResult:
    """Export the best (or named) run's student, check parity, and (re)write the model card."""
    from autolabel import runs, students
    from autolabel.model_card import update_card

    check_exporter(options.format)
    run = runs.select(store, run_id)
    weights = run.weights_file(workspace_root)
    students.backend_class(students.backend_of(weights)).check_export(options)
    out_dir = export_dir(exports_root, run.id)
    calibration = calibration_data(store, image_root, weights, out_dir) if options.int8 else None
    exported = export_weights(weights, out_dir, options, calibration=calibration)
    reference = reference_of(weights, out_dir)
    images, source = parity_images(store, image_root, parity_limit)
    parity = None
    if images:
        deploy_conf = conf if conf is not None else float(run.metrics.get("conf", 0.25))
        parity = check_parity(reference, exported, options, images, source, conf=deploy_conf)
    manifest = record_export(out_dir, exported, options, parity, reference=reference)
    card = update_card(store, run, out_dir, manifest=manifest)
    return ExportResult(run_id=run.id, out_dir=out_dir, exported=exported, parity=parity, card=card)
