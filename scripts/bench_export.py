"""Benchmark the export: ONNX Runtime vs PyTorch eager latency and raw-output parity for yolo11n
(or, with ``--student dfine-n``, the D-FINE-N architecture).

    .venv/bin/python scripts/bench_export.py --out /tmp/bench-export --repeats 5 [--int8] [--openvino] [--threads 2]
    .venv/bin/python scripts/bench_export.py --student dfine-n --out /tmp/bench-export-dfine --threads 2

yolo11n is built from ``yolo11n.yaml`` with random weights (no weights can be downloaded here);
latency and export parity do not depend on what the weights learned. The model is exported to
ONNX through ``autolabel.export.export_weights`` (the path ``autolabel export`` takes), then:

- parity: max |PyTorch - onnxruntime| of the raw head outputs on real photos (BCCD val images,
  letterboxed to --imgsz), over all outputs and over the class-score rows only;
- latency: batch 1 at --imgsz, after warm-up, PyTorch eager and ONNX Runtime timed side by side
  in interleaved blocks (``autolabel.latency``), repeated --repeats times; each repeat's median
  and p90 are reported, and the ratio of the medians' median. Both get the same CPU threads
  (--threads, default PyTorch's own count, which is 1 once ultralytics has set OMP_NUM_THREADS).

``--student dfine-n``: D-FINE-N as ``transformers``' conversion script builds it for
``dfine_n_coco`` (``tests.tiny_models.write_dfine_nano_config``: HGNetV2 with 4 stages of 3 layers, 2 feature levels at
strides 16/32, d_model 128, 3 decoder layers, 300 queries, 80 classes), random weights: its
own init plus N(0, 0.02) noise on every parameter. transformers' init alone (normal, std 0.01 for
convs and linears) makes activations vanish within the backbone, so the encoder scores that pick
the 300 queries are tied to ~1e-7 and which queries cross the top-k boundary is decided by float
rounding: PyTorch-vs-ONNX raw outputs then differ by whole boxes although the graph is the same.
Parity is the raw ``logits`` / ``pred_boxes`` difference with queries paired
(``students/dfine_onnx.raw_diff``) on the same resized images; --int8/--openvino/--engine are
YOLO-only.

``--openvino`` adds OpenVINO on the CPU (the same threads, ultralytics' LATENCY hint, OpenVINO's
default inference precision: bf16 on CPUs that have it). On a machine with CUDA and TensorRT,
``--engine`` adds a TensorRT fp16 engine and PyTorch eager on the GPU. Prints one JSON object (also written to --out/bench_export.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' model builders (tests/tiny_models.py)
DEFAULT_IMAGES = REPO.parent / "shared" / "datasets" / "bccd" / "images" / "val"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-export"))
    parser.add_argument("--student", choices=("yolo", "dfine-n"), default="yolo")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: PyTorch's)")
    parser.add_argument("--engine", action="store_true", help="also TensorRT fp16 (needs CUDA + tensorrt)")
    parser.add_argument(
        "--int8", action="store_true", help="also a static INT8 ONNX, calibrated on BCCD's train images"
    )
    parser.add_argument(
        "--openvino", action="store_true", help="also OpenVINO fp32 on the CPU (needs the openvino extra)"
    )
    args = parser.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from autolabel.runtime import configure_environment

    configure_environment(out / "cache")
    from autolabel.export import export_weights
    from autolabel.exported.options import ExportOptions
    from autolabel.exported.runtimes import openvino_cpu_precision
    from autolabel.runtime import configure_ultralytics

    configure_ultralytics()
    if args.student == "dfine-n":
        if args.int8 or args.openvino or args.engine:
            raise SystemExit("--int8, --openvino and --engine are for the yolo student")
        weights = random_dfine_nano(out / "dfine-n-random")
        model_note = "D-FINE-N (dfine_n_coco architecture) from DFineConfig, random weights (80 classes)"
    else:
        from ultralytics import YOLO

        weights = out / "yolo11n-random.pt"
        YOLO("yolo11n.yaml").save(str(weights))
        model_note = "yolo11n from yolo11n.yaml, random weights (80 classes)"
    from autolabel.export import reference_of

    reference = reference_of(weights, out / "exports")

    t0 = time.perf_counter()
    onnx_path = export_weights(weights, out / "exports", ExportOptions(format="onnx", imgsz=args.imgsz))
    export_s = time.perf_counter() - t0
    parity = raw_parity(reference, onnx_path, args.images, args.n_images, args.imgsz)

    from autolabel import latency

    threads = latency.same_threads(args.threads)
    backends = [
        latency.pytorch_backend(reference, args.imgsz, "cpu"),
        latency.onnxruntime_backend(onnx_path, args.imgsz, threads),
    ]
    int8_path = None
    if args.int8:
        int8_path = export_weights(
            weights,
            out / "exports",
            ExportOptions(format="onnx", imgsz=args.imgsz, int8=True),
            calibration=calibration_yaml(out / "calibration"),
        )
        backends.append(latency.onnxruntime_backend(int8_path, args.imgsz, threads))
    openvino = None
    if args.openvino:  # same threads as the others, OpenVINO's default precision
        openvino = export_weights(
            weights, out / "exports", ExportOptions(format="openvino", imgsz=args.imgsz)
        )
        backends.append(latency.openvino_backend(openvino, args.imgsz, threads))
    engine = None
    if args.engine:
        engine = export_weights(
            weights, out / "exports", ExportOptions(format="engine", imgsz=args.imgsz, half=True)
        )
        backends += [
            latency.pytorch_backend(reference, args.imgsz, "cuda"),
            latency.autobackend_backend("tensorrt", engine, args.imgsz, "cuda", True),
        ]
    repeats = []
    for _ in range(args.repeats):
        rows, _notes = latency.benchmark(backends, imgsz=args.imgsz, runs=args.runs, warmup=args.warmup)
        repeats.append([r.to_dict() for r in rows])
    result = {
        "model": model_note,
        "imgsz": args.imgsz,
        "batch": 1,
        "runs_per_repeat": args.runs,
        "warmup": args.warmup,
        "cpu_threads": threads,
        "repeats": repeats,
        "summary": summarize(repeats),
        "parity": parity,
        "onnx_export_s": round(export_s, 1),
        "onnx_file": onnx_path.name,
        "int8_file": int8_path.name if int8_path else None,
        "engine_file": engine.name if engine else None,
        "openvino_file": openvino.name if openvino else None,
        "openvino_cpu_precision": openvino_cpu_precision() if openvino else None,
        "machine": latency.machine_info(),
        "load_average": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    (out / "bench_export.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def calibration_yaml(root: Path) -> Path:
    """BCCD's train split behind directory links, so ultralytics' label cache lands here, not in shared/."""
    bccd = DEFAULT_IMAGES.parents[1]
    for kind in ("images", "labels"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        if not (root / kind / "train").exists():
            (root / kind / "train").symlink_to(bccd / kind / "train", target_is_directory=True)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(["RBC", "WBC", "Platelets"]))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n{names}\n")
    return data


def raw_parity(reference: Path, onnx_path: Path, images: Path, n_images: int, imgsz: int) -> dict:
    """Max |PyTorch - ONNX Runtime| of the raw outputs on the student's own input tensors
    (``Student.raw_input``: YOLO's letterbox, D-FINE's resize), compared by ``Student.raw_diff``."""
    from autolabel import students
    from autolabel.exported.runtimes import onnx_outputs, onnx_session, torch_outputs
    from autolabel.images import decode

    paths = sorted(images.glob("*.jpg"))[:n_images]
    if not paths:
        raise SystemExit(f"no .jpg images in {images}")
    student = students.load(reference)
    tensors = [student.raw_input(decode(p).pixels, imgsz) for p in paths]
    model = student.torch_module()
    session = onnx_session(onnx_path)
    diffs = [student.raw_diff(torch_outputs(model, t), onnx_outputs(session, t)) for t in tensors]
    result = {
        "images": len(paths),
        "source": str(images),
        "max_abs_diff": max(d.overall for d in diffs),
        "max_abs_diff_scores": max(d.scores for d in diffs),
    }
    if any(d.by_output for d in diffs):
        result["by_output"] = {k: max(d.by_output[k] for d in diffs) for k in diffs[0].by_output}
        result["images_with_queries_reordered"] = sum(d.reordered for d in diffs)
    return result


def random_dfine_nano(folder: Path) -> Path:
    """A random D-FINE-N saved with save_pretrained; returns its ``model.safetensors``."""
    import torch
    from transformers import DFineConfig, DFineForObjectDetection

    from tests.tiny_models import write_dfine_nano_config

    config = DFineConfig.from_json_file(str(write_dfine_nano_config(folder / "dfine-nano.json")))
    torch.manual_seed(0)
    model = DFineForObjectDetection(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))  # activations that do not vanish (see above)
    model.save_pretrained(folder)
    return folder / "model.safetensors"


def summarize(repeats: list[list[dict]]) -> dict:
    """Per backend: the median of the repeats' medians (and p90s) and of their speedups vs PyTorch."""
    grouped: dict[str, list[dict]] = {}
    for rows in repeats:
        for row in rows:
            grouped.setdefault(f"{row['backend']}@{row['device']}:{row['file']}", []).append(row)
    summary = {}
    for key, rows in sorted(grouped.items()):
        speedups = [r["speedup"] for r in rows if r["speedup"] is not None]
        summary[key] = {
            "median_ms": statistics.median(r["median_ms"] for r in rows),
            "p90_ms": statistics.median(r["p90_ms"] for r in rows),
            "medians_ms": [round(r["median_ms"], 2) for r in rows],
            "speedup_vs_pytorch_eager": statistics.median(speedups) if speedups else None,
            "speedups": [round(s, 2) for s in speedups],
        }
    return summary


if __name__ == "__main__":
    main()
