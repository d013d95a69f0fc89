"""Export the trained student through ultralytics (ONNX, TensorRT, OpenVINO) and prove it matches.

Every export lands in ``exports/<run-id>/`` next to a copy of the PyTorch weights (``model.pt``)
and a manifest (``exports.json``) with the options and the parity report of each exported file.

Parity compares the exported model with the PyTorch model on the same images three ways:
raw head outputs on the same letterboxed tensor (onnxruntime directly for ONNX), boxes after
NMS matched one-to-one at IoU 0.9 (both loaded through ultralytics), and the COCO mAP50-95
difference against the human labels. Class names are read back from the exported file.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.runtime import configure_ultralytics

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.store import Store

FORMATS = ("onnx", "engine", "openvino")
REFERENCE_WEIGHTS = "model.pt"
MANIFEST = "exports.json"
MATCH_IOU = 0.9
MAP_TOLERANCE_POINTS = 0.3  # fp32 target; fp16/int8 exports are reported, not held to it
INT8_FORMATS = ("onnx", "engine")
EVAL_CONF = 0.001  # COCO-style evaluation keeps (almost) every box


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    format: str = "onnx"
    imgsz: int = 640
    dynamic: bool = False
    half: bool = False
    int8: bool = False  # static INT8, calibrated on the student's training images (ONNX Runtime / TensorRT)
    nms: bool = False

    def __post_init__(self):
        if self.half and self.int8:
            raise AutolabelError("--half and --int8 exclude each other: choose one precision")
        if self.int8 and self.format not in INT8_FORMATS:
            raise AutolabelError(f"--int8: supported for {', '.join(INT8_FORMATS)}, not {self.format}")

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"

    @property
    def stem(self) -> str:
        """A file stem per variant, so an fp16 engine never overwrites the fp32 ONNX next to it."""
        parts = [self.format, self.precision]
        if self.dynamic:
            parts.append("dynamic")
        if self.nms:
            parts.append("nms")
        return "-".join(parts)


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
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        within = self.map_tolerance_points is None or self.map_diff_points <= self.map_tolerance_points
        return self.names_match and within

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


# -- exporting ----------------------------------------------------------------------------------
def check_exporter(fmt: str, *, cuda_available: bool | None = None) -> None:
    """Fail in one line, before any work, when this machine cannot produce ``fmt``."""
    if fmt not in FORMATS:
        raise AutolabelError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if fmt == "engine":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            raise AutolabelError(
                "--format engine: TensorRT needs an NVIDIA GPU with CUDA and none is available here"
                " (export --format onnx instead, or run this on a GPU machine)"
            )
        if importlib.util.find_spec("tensorrt") is None:
            raise AutolabelError(
                "--format engine: the optional package 'tensorrt' is not installed: pip install tensorrt"
            )
    if fmt == "openvino" and importlib.util.find_spec("openvino") is None:
        raise AutolabelError(
            "--format openvino: the optional package 'openvino' is not installed: pip install openvino"
        )
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise AutolabelError("--format onnx: the package 'onnx' is not installed: pip install onnx onnxslim")


def export_device(fmt: str) -> str:
    # ONNX and OpenVINO export on the CPU: on a GPU ultralytics would ask for onnxruntime-gpu.
    return "0" if fmt == "engine" else "cpu"


def export_weights(
    weights: Path, out_dir: Path, options: ExportOptions, *, calibration: Path | None = None
) -> Path:
    """Copy ``weights`` to ``out_dir/model.pt`` and export it; returns the exported file or folder.

    ``calibration``: a YOLO data.yaml whose *train* split calibrates an ``int8`` export (ultralytics
    runs ONNX Runtime's static quantization over it; only convolutions and matmuls are quantized,
    so the box decode stays float).
    """
    check_exporter(options.format)
    if options.int8 and calibration is None:
        raise AutolabelError("--int8 needs calibration images: the student's training set was not found")
    configure_ultralytics()
    from ultralytics import YOLO

    out_dir.mkdir(parents=True, exist_ok=True)
    reference = out_dir / REFERENCE_WEIGHTS
    if not reference.exists() or not reference.samefile(weights):
        shutil.copyfile(weights, reference)
    # ultralytics names its output after the input file, so each variant exports from its own link.
    source = out_dir / f"{options.stem}.pt"
    if source.exists():
        source.unlink()
    try:
        os.link(reference, source)
    except OSError:
        shutil.copyfile(reference, source)
    try:
        exported = YOLO(str(source), task="detect").export(
            format=options.format,
            imgsz=options.imgsz,
            dynamic=options.dynamic,
            quantize=8 if options.int8 else 16 if options.half else None,
            nms=options.nms,
            **({"data": str(calibration), "split": "train"} if options.int8 else {}),
            device=export_device(options.format),
            verbose=False,
        )
    except Exception as exc:  # ultralytics raises bare exceptions for missing toolchains
        raise AutolabelError(f"{options.format} export failed: {_first_line(exc)}") from exc
    finally:
        source.unlink(missing_ok=True)
    if not exported or not Path(exported).exists():
        raise AutolabelError(f"{options.format} export produced no file (see the ultralytics log above)")
    exported = Path(exported)
    if options.int8 and exported.is_file() and exported.stem.endswith("_int8"):  # ultralytics' own suffix
        exported = exported.replace(exported.with_name(f"{options.stem}{exported.suffix}"))
    return exported


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


# -- raw outputs --------------------------------------------------------------------------------
def letterbox(rgb: np.ndarray, imgsz: int) -> np.ndarray:
    """The square letterboxed 1x3xHxW float32 tensor ultralytics feeds a static export."""
    from ultralytics.data.augment import LetterBox

    padded = LetterBox(new_shape=(imgsz, imgsz), auto=False)(image=rgb)
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def load_torch_model(weights: Path, device: str = "cpu"):
    """The fused eval-mode DetectionModel, as ultralytics runs it (and as the exporter traced it)."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect").model
    return model.fuse().float().eval().to(device)


def torch_raw(model, batch: np.ndarray) -> np.ndarray:
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(torch.from_numpy(batch).to(device))
    out = out[0] if isinstance(out, (list, tuple)) else out
    return out.float().cpu().numpy()


def onnx_session(path: Path, providers: Sequence[str] | None = None, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    available = ort.get_available_providers()
    providers = [p for p in (providers or available) if p in available]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def onnx_raw(session, batch: np.ndarray) -> np.ndarray:
    spec = session.get_inputs()[0]
    dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
    return np.asarray(session.run(None, {spec.name: batch.astype(dtype)})[0], dtype=np.float32)


def backend_raw(backend, batch: np.ndarray) -> np.ndarray:
    """Raw outputs of any exported format through ultralytics' AutoBackend (TensorRT, OpenVINO)."""
    import torch

    x = torch.from_numpy(batch).to(backend.device)
    x = x.half() if getattr(backend, "fp16", False) else x
    out = backend(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    return out.float().cpu().numpy()


def raw_output_diff(reference: Sequence[np.ndarray], exported: Sequence[np.ndarray]) -> tuple[float, float]:
    """(max |diff| over everything, over the class-score rows) of detect outputs shaped 1x(4+nc)xN."""
    overall, scores = 0.0, 0.0
    for ref, exp in zip(reference, exported, strict=True):
        if ref.shape != exp.shape:
            raise AutolabelError(f"exported output shape {exp.shape} differs from PyTorch {ref.shape}")
        diff = np.abs(ref.astype(np.float64) - exp.astype(np.float64))
        overall = max(overall, float(diff.max(initial=0.0)))
        scores = max(scores, float(diff[:, 4:].max(initial=0.0)))
    return overall, scores


# -- boxes and mAP ------------------------------------------------------------------------------
def load_predictor(model_path: Path):
    """Any format (.pt, .onnx, .engine, OpenVINO folder) through ultralytics."""
    from ultralytics import YOLO

    return YOLO(str(model_path), task="detect")


def detect(predictor, rgb: np.ndarray, imgsz: int, conf: float, device: str) -> sv.Detections:
    """One image through ultralytics' own predictor, square-letterboxed for every format alike."""
    import supervision as sv

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    (result,) = predictor.predict(bgr, imgsz=imgsz, conf=conf, rect=False, device=device, verbose=False)
    return sv.Detections.from_ultralytics(result)


def match_boxes(reference: sv.Detections, exported: sv.Detections, iou: float = MATCH_IOU) -> int:
    """How many boxes pair up one-to-one with the same class at IoU >= ``iou`` (greedy, best first)."""
    if len(reference) == 0 or len(exported) == 0:
        return 0
    import supervision as sv

    overlaps = sv.box_iou_batch(reference.xyxy, exported.xyxy)
    overlaps[reference.class_id[:, None] != exported.class_id[None, :]] = 0.0
    matched = 0
    while True:
        i, j = np.unravel_index(np.argmax(overlaps), overlaps.shape)
        if overlaps[i, j] < iou:
            return matched
        matched += 1
        overlaps[i, :] = 0.0
        overlaps[:, j] = 0.0


def match_rate(matched: int, n_reference: int, n_exported: int) -> float:
    """Matched pairs over the larger box count; two empty outputs agree perfectly."""
    larger = max(n_reference, n_exported)
    return 1.0 if larger == 0 else matched / larger


def map50_95(names: list[str], images: Sequence[ParityImage], predictions: Sequence[sv.Detections]) -> float:
    """COCO mAP50-95 against the images' labels (``autolabel.evaluate``); 0 when undefined."""
    from autolabel.evaluate import coco_metrics

    sizes = [(im.width, im.height) for im in images]
    value = coco_metrics([im.labels for im in images], predictions, sizes, names)["map50_95"]
    return 0.0 if value is None else float(value)


# -- class names --------------------------------------------------------------------------------
def names_list(names) -> list[str]:
    """Ultralytics keeps names as {index: name} (or its string form in metadata); ours are lists."""
    if isinstance(names, str):
        names = ast.literal_eval(names)
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def onnx_names(session) -> list[str]:
    meta = session.get_modelmeta().custom_metadata_map
    if "names" not in meta:
        raise AutolabelError("the exported ONNX file carries no class names in its metadata")
    return names_list(meta["names"])


def openvino_cpu_precision() -> str:
    """The inference precision OpenVINO's CPU plugin picks by default here ('f32', 'bf16', ...)."""
    from autolabel.runtime import import_openvino

    return import_openvino().Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def openvino_precision_note() -> str | None:
    """Says so when OpenVINO will not compute an fp32 model in fp32 on this CPU (None when it does)."""
    precision = openvino_cpu_precision()
    if precision == "f32":
        return None
    return (
        f"OpenVINO runs this model in {precision} on this CPU "
        "(its default inference precision where the CPU supports it)"
    )


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
    from autolabel.images import ImageDecodeError

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
        session = onnx_session(exported)
        exported_names = onnx_names(session)
        exported_forward = lambda x: onnx_raw(session, x)
    else:
        from ultralytics.nn.autobackend import AutoBackend

        backend = AutoBackend(
            str(exported), device=_torch_device(torch_device), fp16=options.half, verbose=False
        )
        exported_names = names_list(backend.names)
        exported_forward = lambda x: backend_raw(backend, x)
        if options.format == "openvino" and (note := openvino_precision_note()):
            notes.append(f"{note}: raw differences reflect that, not the export")
    model = load_torch_model(reference, torch_device) if compare_raw else None
    reference_predictor, exported_predictor = load_predictor(reference), load_predictor(exported)

    max_diff = max_diff_scores = 0.0
    used, reference_dets, exported_dets = [], [], []
    for image in images:
        try:
            rgb = image.rgb()
        except ImageDecodeError as exc:
            notes.append(f"{image.path.name} skipped: {exc}")
            continue
        if compare_raw:
            x = letterbox(rgb, options.imgsz)
            overall, scores = raw_output_diff([torch_raw(model, x)], [exported_forward(x)])
            max_diff, max_diff_scores = max(max_diff, overall), max(max_diff_scores, scores)
        reference_dets.append(detect(reference_predictor, rgb, options.imgsz, EVAL_CONF, device))
        exported_dets.append(detect(exported_predictor, rgb, options.imgsz, EVAL_CONF, device))
        used.append(image)
    images = used
    reference_names = names_list(reference_predictor.names)
    if names_list(exported_predictor.names) != exported_names:
        notes.append("ultralytics reads different class names from the exported file than its metadata holds")
        exported_names = names_list(exported_predictor.names)

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
        notes=notes,
    )


def _torch_device(name: str):
    import torch

    return torch.device(name)


# -- manifest -----------------------------------------------------------------------------------
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


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
    from autolabel import runs
    from autolabel.model_card import update_card

    check_exporter(options.format)
    run = runs.select(store, run_id)
    weights = run.weights_file(workspace_root)
    out_dir = export_dir(exports_root, run.id)
    calibration = calibration_data(store, image_root, weights, out_dir) if options.int8 else None
    exported = export_weights(weights, out_dir, options, calibration=calibration)
    images, source = parity_images(store, image_root, parity_limit)
    parity = None
    if images:
        deploy_conf = conf if conf is not None else float(run.metrics.get("conf", 0.25))
        parity = check_parity(
            out_dir / REFERENCE_WEIGHTS, exported, options, images, source, conf=deploy_conf
        )
    manifest = record_export(out_dir, exported, options, parity)
    card = update_card(store, run, out_dir, manifest=manifest)
    return ExportResult(run_id=run.id, out_dir=out_dir, exported=exported, parity=parity, card=card)
