"""The D-FINE student as an ONNX file: export, the metadata that describes it, and its runtime.

``export_onnx`` traces ``DFineStudent.torch_module`` (raw ``logits`` (B, Q, C) and ``pred_boxes``
(B, Q, 4) normalized cx, cy, w, h; no decode in the graph) with torch's TorchScript-based exporter
at opset ``OPSET`` for a fixed imgsz x imgsz input (batch 1, or a dynamic batch with
``--dynamic``), the exporter ultralytics and autolabel's OWLv2 cache use too. The file's
``custom_metadata_map`` says what it is: ``names`` (as ultralytics writes them, so the same
reader works), ``imgsz``, the ``preprocess`` rule and the output layout, and ``autolabel_student``
(how ``students.backend_of`` recognises it).

Parity note: DETR queries are a set. An untrained (or barely trained) D-FINE has near-tied encoder
scores, and which of the tied queries ``torch.topk`` and ONNX Runtime's TopK put first differs at
float rounding, so outputs compared row by row can differ by a whole anchor while the graph
computes the same function. ``raw_diff`` therefore pairs queries one-to-one first (the pairing
with the smaller largest difference: in order, or by linear assignment) and says when it reordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.students.base import RawDiff

if TYPE_CHECKING:
    from autolabel.exported.options import ExportOptions

OPSET = 17  # GridSample (deformable attention) needs 16, the fused LayerNormalization 17
STUDENT_KEY = "autolabel_student"
OUTPUTS = ("logits", "pred_boxes")
PREPROCESS = "RGB, resized to {imgsz}x{imgsz} (bilinear, no letterbox), scaled to [0, 1] (/255), NCHW float32"


def metadata(class_names: Sequence[str], imgsz: int, *, dynamic: bool) -> dict[str, str]:
    """What the exported file says about itself (``custom_metadata_map``)."""
    return {
        STUDENT_KEY: "dfine",
        "description": "autolabel D-FINE student (transformers DFineForObjectDetection)",
        "license": "Apache-2.0",
        "names": str(dict(enumerate(class_names))),
        "imgsz": str([imgsz, imgsz]),
        "batch": "dynamic" if dynamic else "1",
        "preprocess": PREPROCESS.format(imgsz=imgsz),
        "outputs": (
            "logits (B, Q, C): class logits, sigmoid per class; pred_boxes (B, Q, 4): cx, cy, w, h"
            " normalized to the input; decode: top-k over queries x classes, no NMS"
        ),
    }


def export_onnx(module, class_names: Sequence[str], options: ExportOptions, out: Path) -> Path:
    """Write ``out.onnx`` from the raw-output ``module`` (on the CPU, fp32) and its metadata."""
    import os
    import warnings

    import onnx
    import torch

    path = out.with_suffix(".onnx")
    partial = out.with_suffix(".onnx.partial")
    example = torch.zeros(1, 3, options.imgsz, options.imgsz)
    batch_axis = {0: "batch"}
    dynamic_axes = {name: batch_axis for name in ("images", *OUTPUTS)} if options.dynamic else None
    with warnings.catch_warnings():
        # shapes read as Python numbers become constants: intended, the input size is fixed
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module.cpu().eval(),
                (example,),
                str(partial),
                dynamo=False,
                input_names=["images"],
                output_names=list(OUTPUTS),
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
            )
    model = onnx.load(str(partial))
    for key, value in metadata(class_names, options.imgsz, dynamic=options.dynamic).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(partial))
    os.replace(partial, path)
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """The ``custom_metadata_map`` of an ONNX file, without building a runtime session."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises protobuf's DecodeError and others
        raise AutolabelError(f"{path}: not a readable ONNX file ({exc})") from None
    return {p.key: p.value for p in model.metadata_props}


def is_dfine_onnx(path: Path) -> bool:
    return read_metadata(path).get(STUDENT_KEY) == "dfine"


class OnnxRunner:
    """An exported D-FINE in ONNX Runtime: the same inputs and outputs as the PyTorch module."""

    def __init__(self, path: Path):
        from autolabel.exported.runtimes import onnx_names, onnx_session

        self.path = Path(path)
        self.session = onnx_session(self.path)
        self.class_names = onnx_names(self.session)
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
        self.imgsz = int(spec.shape[-1])

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, pred_boxes) for a (B, 3, imgsz, imgsz) float32 batch, in chunks a fixed batch allows."""
        if batch.shape[-1] != self.imgsz or batch.shape[-2] != self.imgsz:
            raise AutolabelError(
                f"{self.path.name} takes {self.imgsz}x{self.imgsz} input, not {batch.shape[-2]}x{batch.shape[-1]}"
                f" (pass --imgsz {self.imgsz})"
            )
        step = self.batch or len(batch)
        parts = [
            self.session.run(list(OUTPUTS), {self.input_name: batch[i : i + step]})
            for i in range(0, len(batch), step)
        ]
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(OUTPUTS)))


def raw_diff(reference: Sequence[np.ndarray], exported: Sequence[np.ndarray]) -> RawDiff:
    """Max |diff| of logits and of pred_boxes, per image with its queries paired one-to-one."""
    from autolabel.detections import query_order

    ref_logits, ref_boxes = (np.asarray(a, np.float64) for a in reference[:2])
    exp_logits, exp_boxes = (np.asarray(a, np.float64) for a in exported[:2])
    for ref, exp in ((ref_logits, exp_logits), (ref_boxes, exp_boxes)):
        if ref.shape != exp.shape:
            raise AutolabelError(f"exported output shape {exp.shape} differs from PyTorch {ref.shape}")
    logits_diff = boxes_diff = 0.0
    reordered = False
    for b in range(len(ref_logits)):
        ref_rows = np.concatenate([ref_logits[b], ref_boxes[b]], axis=1)
        exp_rows = np.concatenate([exp_logits[b], exp_boxes[b]], axis=1)
        order = query_order(ref_rows, exp_rows, reduce="max")
        reordered = reordered or bool((order != np.arange(len(order))).any())
        num_classes = ref_logits.shape[-1]
        diff = np.abs(ref_rows - exp_rows[order])
        logits_diff = max(logits_diff, float(diff[:, :num_classes].max(initial=0.0)))
        boxes_diff = max(boxes_diff, float(diff[:, num_classes:].max(initial=0.0)))
    return RawDiff(
        overall=max(logits_diff, boxes_diff),
        scores=logits_diff,
        by_output={"logits": logits_diff, "pred_boxes": boxes_diff},
        reordered=reordered,
    )


__all__: Sequence[str] = ("OPSET", "OnnxRunner", "export_onnx", "is_dfine_onnx", "metadata", "raw_diff")
