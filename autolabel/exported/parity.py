"""Parity: does the exported student compute what the PyTorch student computes?

The exported model is compared with the PyTorch model on the same images three ways: raw head
outputs on the same input tensor (``Student.raw_input``; onnxruntime directly for ONNX, compared by
``Student.raw_diff``), boxes after NMS (or D-FINE's top-k decode) matched one-to-one at IoU 0.9
(both loaded as students), and the COCO mAP50-95 difference against the human labels. Class names
are read back from the exported file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.detections import match_boxes, match_rate
from autolabel.exported import runtimes
from autolabel.students.yolo import names_list

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.exported.options import ExportOptions
    from autolabel.store import Store
    from autolabel.students.base import Student

MATCH_IOU = 0.9
MAP_TOLERANCE_POINTS = 0.3  # fp32 target; fp16/int8 exports are reported, not held to it
EVAL_CONF = 0.001  # COCO-style evaluation keeps (almost) every box


@dataclass(frozen=True, kw_only=True)
class ParityImage:
    """A labeled image; pixels are decoded when needed so a large val set never sits in memory."""

    image_id: int
    path: Path
    width: int  # after EXIF orientation, the frame the labels are in
    height: int
    labels: sv.Detections

    def rgb(self) -> np.ndarray:
        from autolabel.images import decode

        return decode(self.path).pixels


@dataclass(frozen=True, kw_only=True)
class ParityReport:
    images: int
    image_source: str  # 'validation' or 'labeled' (no frozen validation set yet)
    max_abs_diff: float | None  # raw head outputs; None when NMS is inside the exported graph
    max_abs_diff_scores: float | None  # class-score rows only (box rows are in pixels)
    conf: float
    boxes_reference: int
    boxes_exported: int
    boxes_matched: int
    match_rate: float
    map50_95_reference: float
    map50_95_exported: float
    map_diff_points: float
    map_tolerance_points: float | None
    names_reference: list[str]
    names_exported: list[str]
    names_match: bool
    match_iou: float = MATCH_IOU
    raw_diffs: dict[str, float] = field(default_factory=dict)  # max |diff| per named output (D-FINE)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        within = self.map_tolerance_points is None or self.map_diff_points <= self.map_tolerance_points
        return self.names_match and within

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


# -- the images parity runs on ------------------------------------------------------------------
def parity_images(store: Store, image_root: Path, limit: int | None = None) -> tuple[list[ParityImage], str]:
    """The frozen validation images with their labels, or the labeled ones when there is no val set."""
    from autolabel import detections as dets

    labels = store.labels()
    source = "validation"
    records = [r for r in store.images(status="validation") if r.id in labels]
    if not records:
        source = "labeled"
        records = [r for r in store.images(status="labeled") if r.id in labels]
    if limit is not None:
        records = records[:limit]
    images = [
        ParityImage(
            image_id=r.id,
            path=image_root / r.path,
            width=r.width,
            height=r.height,
            labels=dets.from_json(labels[r.id]),
        )
        for r in records
        if r.width and r.height and (image_root / r.path).is_file()
    ]
    return images, source


# -- boxes and mAP ------------------------------------------------------------------------------
def detect(student: Student, rgb: np.ndarray, imgsz: int, conf: float, device: str) -> sv.Detections:
    """One image through the student's own prediction, square-letterboxed for every format alike."""
    from autolabel import detections as dets

    (raw,) = student.predict([rgb], conf=conf, imgsz=imgsz, device=device, square=True)
    return dets.make(raw.xyxy, raw.class_id, raw.confidence)


def map50_95(names: list[str], images: Sequence[ParityImage], predictions: Sequence[sv.Detections]) -> float:
    """COCO mAP50-95 against the images' labels (``autolabel.evaluate``); 0 when undefined."""
    from autolabel.evaluate import coco_metrics

    sizes = [(im.width, im.height) for im in images]
    value = coco_metrics([im.labels for im in images], predictions, sizes, names)["map50_95"]
    return 0.0 if value is None else float(value)


# -- the whole check ----------------------------------------------------------------------------
def check_parity(
    reference: Path,
    exported: Path,
    options: ExportOptions,
    images: Sequence[ParityImage],
    image_source: str,
    *,
    conf: float,
) -> ParityReport:
    """Compare ``exported`` with the PyTorch ``reference`` on ``images`` (see the module docstring)."""
    from autolabel import students
    from autolabel.images import ImageDecodeError
    from autolabel.runtime import configure_ultralytics

    configure_ultralytics()
    device = "0" if options.format == "engine" else "cpu"
    torch_device = "cuda:0" if options.format == "engine" else "cpu"
    notes = []
    if image_source != "validation":
        notes.append("no frozen validation set yet: parity ran on labeled (training) images")

    compare_raw = not options.nms
    if not compare_raw:
        notes.append("NMS is inside the exported graph: raw outputs are not comparable, boxes and mAP are")
    if options.format == "onnx":
        session = runtimes.onnx_session(exported)
        exported_names = runtimes.onnx_names(session)
        exported_forward = lambda x: runtimes.onnx_outputs(session, x)
    else:
        backend = runtimes.autobackend(exported, torch_device, options.half)
        exported_names = names_list(backend.names)
        exported_forward = lambda x: runtimes.backend_outputs(backend, x)
        if options.format == "openvino" and (note := runtimes.openvino_precision_note()):
            notes.append(f"{note}: raw differences reflect that, not the export")
    reference_student = students.load(reference)
    model = reference_student.torch_module(torch_device) if compare_raw else None
    exported_student = students.load(exported, backend=reference_student.backend)

    max_diff = max_diff_scores = 0.0
    by_output: dict[str, float] = {}
    reordered = 0
    used, reference_dets, exported_dets = [], [], []
    for image in images:
        try:
            rgb = image.rgb()
        except ImageDecodeError as exc:
            notes.append(f"{image.path.name} skipped: {exc}")
            continue
        if compare_raw:
            x = reference_student.raw_input(rgb, options.imgsz)
            diff = reference_student.raw_diff(runtimes.torch_outputs(model, x), exported_forward(x))
            max_diff, max_diff_scores = max(max_diff, diff.overall), max(max_diff_scores, diff.scores)
            for name, value in diff.by_output.items():
                by_output[name] = max(by_output.get(name, 0.0), value)
            reordered += int(diff.reordered)
        reference_dets.append(detect(reference_student, rgb, options.imgsz, EVAL_CONF, device))
        exported_dets.append(detect(exported_student, rgb, options.imgsz, EVAL_CONF, device))
        used.append(image)
    images = used
    if reordered:
        notes.append(
            f"{reordered} of {len(images)} images: the exported model put near-tied queries in another"
            " order; raw outputs were compared with queries paired one-to-one"
        )
    reference_names = reference_student.class_names
    if exported_student.class_names != exported_names:
        notes.append("the exported student reads different class names from the file than its metadata holds")
        exported_names = exported_student.class_names

    matched = n_ref = n_exp = 0
    for ref, exp in zip(reference_dets, exported_dets, strict=True):
        ref, exp = ref[ref.confidence >= conf], exp[exp.confidence >= conf]
        matched += match_boxes(ref, exp)
        n_ref, n_exp = n_ref + len(ref), n_exp + len(exp)
    if n_ref == n_exp == 0:
        notes.append(
            f"neither model has a box at conf {conf:g} on these images: the box-level match is vacuous"
        )
    map_ref = map50_95(reference_names, images, reference_dets)
    map_exp = map50_95(reference_names, images, exported_dets)
    return ParityReport(
        images=len(images),
        image_source=image_source,
        max_abs_diff=max_diff if compare_raw else None,
        max_abs_diff_scores=max_diff_scores if compare_raw else None,
        conf=conf,
        boxes_reference=n_ref,
        boxes_exported=n_exp,
        boxes_matched=matched,
        match_rate=match_rate(matched, n_ref, n_exp),
        map50_95_reference=map_ref,
        map50_95_exported=map_exp,
        map_diff_points=abs(map_ref - map_exp) * 100.0,
        map_tolerance_points=MAP_TOLERANCE_POINTS if options.precision == "fp32" else None,
        names_reference=reference_names,
        names_exported=exported_names,
        names_match=reference_names == exported_names,
        raw_diffs=by_output,
        notes=notes,
    )
