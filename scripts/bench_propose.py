"""Benchmark the propose engine (issue 2). Results go to BENCHMARKS.md with the exact command.

speed:  full-size grounding-dino-tiny architecture (random weights: nothing can be downloaded here),
        N images of SIZE px: (a) model forward only, inputs prepared beforehand; (b) the engine end to
        end (background decode, preprocess, forward, postprocess, SQLite writes); (c) a naive per-image
        loop (load, preprocess, forward, postprocess one image at a time, as autodistill does).
        Target: (b) / (a) >= 0.9.
memory: peak RSS of the engine over 100 vs 10,000 small images with a tiny model, each in a fresh
        subprocess. Target: flat within 10%.

runtimes: (issue 15) full-size grounding-dino-tiny (Swin-T + BERT-base) and owlv2-base-patch16
        (Owlv2Config defaults: ViT-B/16, 960 px) with random weights, N generated WxH images: each
        variant in its own subprocess (clean peak RSS, its own empty export cache): transformers eager
        (runtime torch), grounding-dino's torch with the fixed square rule (the parity reference of its
        exports), onnx, openvino. Per variant: export time, end to end s/image through the real
        engine (decode -> stored detections; after a warm-up image), peak RSS, the export-time parity
        figures, and the box match against the reference at IoU 0.9 over the boxes above each of
        --match-thresholds (the detections are stored at --box-threshold, default 0: random weights
        rarely score above the usual 0.3). Raw JSON to scripts/results/bench_propose_runtimes.json.

    python scripts/bench_propose.py speed --n 8 --size 800
    python scripts/bench_propose.py memory --counts 100 10000
    python scripts/bench_propose.py runtimes --n 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")


def make_images(folder: Path, count: int, width: int, height: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    for i in range(count):
        shifted = np.roll(base, i * 7, axis=1)
        Image.fromarray(shifted).save(folder / f"{i:06d}.jpg", quality=90)


def workspace_store(root: Path, images: Path):
    from autolabel.config import GroupingConfig
    from autolabel.registry import register_images
    from autolabel.store import Store

    store = Store.open(root / "state.db")
    register_images(store, images, GroupingConfig())
    return store


def speed(args) -> dict:
    import torch

    from autolabel.engine import model_key, run_proposals
    from autolabel.images import decode
    from autolabel.ontology import Ontology
    from autolabel.proposers import build_proposer
    from autolabel.proposers.base import BatchMapper, ProposerSettings

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-propose-"))
    from tests.tiny_models import build_full_size_grounding_dino

    model_dir = build_full_size_grounding_dino(tmp / "model")
    make_images(tmp / "images", args.n, args.size, args.size * 3 // 4)
    ontology = Ontology.load(REPO / "prompts" / "fasteners.yaml")
    settings = ProposerSettings(model="grounding-dino", model_path=str(model_dir), batch_size=args.batch_size)
    proposer = build_proposer(settings, ontology)
    paths = sorted((tmp / "images").glob("*.jpg"))

    # warm-up at both shapes the timed code runs (a batch and a single image): the first call at a
    # new input shape builds kernels and allocates, which would otherwise be charged to one mode
    proposer.predict([decode(p).pixels for p in paths[: args.batch_size]])
    proposer.predict([decode(paths[0]).pixels])

    images = [decode(p).pixels for p in paths]
    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    def forward_only() -> float:
        """(a) model forward only: inputs prepared beforehand (not timed), one batch at a time."""
        prepared = [proposer.preprocess(b) for b in batches]
        start = time.perf_counter()
        for inputs in prepared:
            proposer.forward(inputs)
        return time.perf_counter() - start

    def engine(run: int) -> float:
        """(b) the engine end to end, in a fresh store each time."""
        store = workspace_store(tmp / f"ws{run}", tmp / "images")
        ids = store.ensure_classes(ontology.names)
        mapper = BatchMapper(lambda: proposer)
        key = model_key(settings, mapper.model_version, ontology.fingerprint())
        start = time.perf_counter()
        summary = run_proposals(
            store, tmp / "images", mapper, [ids[n] for n in ontology.names], settings, key
        )
        elapsed = time.perf_counter() - start
        assert summary.proposed == args.n, summary
        return elapsed

    def naive() -> float:
        """(c) naive per-image loop: load, preprocess, forward, postprocess, one at a time."""
        start = time.perf_counter()
        for path in paths:
            proposer.predict([decode(path).pixels])
        return time.perf_counter() - start

    # A B C C B A: each mode once early and once late, so drifting background load hits all equally.
    forward_s = engine_s = naive_s = 0.0
    forward_s += forward_only()
    engine_s += engine(0)
    naive_s += naive()
    naive_s += naive()
    engine_s += engine(1)
    forward_s += forward_only()
    n = 2 * args.n
    return {
        "images": n,
        "size": f"{args.size}x{args.size * 3 // 4}",
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "forward_only_img_s": round(n / forward_s, 4),
        "engine_img_s": round(n / engine_s, 4),
        "naive_img_s": round(n / naive_s, 4),
        "engine_over_forward": round(forward_s / engine_s, 3),
        "engine_over_naive": round(naive_s / engine_s, 3),
    }


def memory_child(count: int) -> dict:
    """Runs in a fresh process: tiny Grounding DINO over ``count`` 96x72 images."""
    import torch

    from autolabel.engine import model_key, run_proposals
    from autolabel.ontology import Ontology
    from autolabel.proposers import build_proposer
    from autolabel.proposers.base import BatchMapper, ProposerSettings
    from tests.tiny_models import build_tiny_grounding_dino

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-mem-{count}-"))
    model_dir = build_tiny_grounding_dino(tmp / "model")
    make_images(tmp / "images", count, 96, 72)
    store = workspace_store(tmp / "ws", tmp / "images")
    ontology = Ontology.from_prompts(["bolt", "nut"])
    settings = ProposerSettings(model="grounding-dino", model_path=str(model_dir), batch_size=8)
    ids = store.ensure_classes(ontology.names)
    mapper = BatchMapper(lambda: build_proposer(settings, ontology))
    key = model_key(settings, mapper.model_version, ontology.fingerprint())
    start = time.perf_counter()
    summary = run_proposals(store, tmp / "images", mapper, [ids[n] for n in ontology.names], settings, key)
    return {
        "images": count,
        "proposed": summary.proposed,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def memory(args) -> dict:
    results = []
    for count in args.counts:
        out = subprocess.run(
            [sys.executable, __file__, "memory-child", str(count)], capture_output=True, text=True, check=True
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    low, high = results[0]["peak_rss_mib"], results[-1]["peak_rss_mib"]
    return {"runs": results, "rss_ratio_high_over_low": round(high / low, 3)}


RUNTIME_VARIANTS = {
    "grounding-dino": ("eager", "torch-square", "onnx", "openvino"),
    "owlv2": ("eager", "onnx", "openvino"),
}
REFERENCE = {"grounding-dino": "torch-square", "owlv2": "eager"}  # same input rule as the exports


def build_model(model: str, folder: Path, tiny: bool) -> Path:
    from tests import tiny_models

    if model == "grounding-dino":
        build = tiny_models.build_tiny_grounding_dino if tiny else tiny_models.build_full_size_grounding_dino
        return build(folder)
    if tiny:
        return tiny_models.build_tiny_owlv2(folder)
    return build_full_size_owlv2(folder)


def build_full_size_owlv2(directory: Path) -> Path:
    """owlv2-base-patch16's architecture (Owlv2Config defaults: ViT-B/16 at 960 px, 3600 boxes) with
    random weights and the tiny CLIP vocabulary (the text side runs once per ontology)."""
    import torch
    from transformers import (
        CLIPTokenizerFast,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    from tests.tiny_models import clip_vocab_and_merges

    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizerFast(
        vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|startoftext|>",
        eos_token="<|endoftext|>", pad_token="!", model_max_length=16,
    )  # fmt: skip
    config = Owlv2Config(
        text_config={"vocab_size": len(vocab), "max_position_embeddings": 16},
        vision_config={"image_size": 960},  # owlv2-base-patch16(-ensemble); the class default is 768
    )
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config).eval()
    size = config.vision_config.image_size
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer
    )
    processor.save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def runtimes_child(args) -> dict:
    """One variant in a fresh process: build (export), warm up, the engine end to end, peak RSS."""
    import torch

    from autolabel.engine import model_key, run_proposals
    from autolabel.images import decode
    from autolabel.ontology import Ontology
    from autolabel.proposers import build_proposer
    from autolabel.proposers.base import BatchMapper, ProposerSettings

    torch.set_num_threads(args.threads)
    if args.variant == "torch-square":  # the fallback path: onnx asked, onnxruntime missing
        sys.modules["onnxruntime"] = None  # type: ignore[assignment]
    runtime = {"eager": "torch", "torch-square": "onnx"}.get(args.variant, args.variant)
    ontology = Ontology.load(REPO / "prompts" / "fasteners.yaml")
    settings = ProposerSettings(
        model=args.model, model_path=args.model_dir, device="cpu", batch_size=1, runtime=runtime,
        box_threshold=args.box_threshold, text_threshold=args.box_threshold, max_det=args.max_det,
    )  # fmt: skip
    started = time.perf_counter()
    proposer = build_proposer(settings, ontology)
    build_s = time.perf_counter() - started
    selections = getattr(proposer, "selections", None) or [getattr(proposer, "selection", None)]
    cached = [s.cached for s in selections if s is not None and s.cached is not None]
    images = Path(args.images)
    paths = sorted(images.glob("*.jpg"))
    proposer.predict([decode(paths[0]).pixels])  # warm-up
    work = Path(tempfile.mkdtemp(prefix="bench-runtimes-ws-"))
    store = workspace_store(work, images)
    ids = store.ensure_classes(ontology.names)
    mapper = BatchMapper(lambda: proposer)
    key = model_key(settings, mapper.model_version, ontology.fingerprint())
    summary = run_proposals(store, images, mapper, [ids[n] for n in ontology.names], settings, key)
    detections = {rel: json.loads(det) for rel, det in store.predictions_with_paths(key, len(paths))}
    return {
        "model": args.model,
        "variant": args.variant,
        "runtime_used": "+".join(sorted({s.used for s in selections if s is not None})) or "torch",
        "build_s": round(build_s, 2),
        "export_s": [c.parity.get("export_s") for c in cached if c.parity],
        "parity": [c.parity for c in cached],
        "not_used": [c.reason for c in cached if c.reason],
        "images": summary.proposed,
        "s_per_image": round(summary.seconds / max(1, summary.proposed), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "detections": detections,
    }


def box_match(reference: dict, other: dict, threshold: float, iou: float = 0.9) -> tuple[float | None, int]:
    """Fraction of the reference boxes (score >= threshold) that ``other`` has: one-to-one, same
    class, IoU >= iou (``detections.match_boxes``, the export parity's rule)."""
    from autolabel import detections as dets

    matched = total = 0
    for rel, ref_json in reference.items():
        ref, got = dets.from_json(json.dumps(ref_json)), dets.from_json(json.dumps(other.get(rel, {})))
        ref = ref[ref.confidence >= threshold]
        got = got[got.confidence >= threshold] if len(got) else got
        total += len(ref)
        matched += dets.match_boxes(ref, got, iou)
    return (round(matched / total, 4) if total else None), total


def runtimes(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-runtimes-"))
    width, height = args.size
    make_images(tmp / "images", args.n, width, height)
    results: dict = {"images": args.n, "size": f"{width}x{height}", "threads": args.threads, "tiny": args.tiny,
                     "box_threshold": args.box_threshold, "models": {}}  # fmt: skip
    for model in args.models:
        model_dir = build_model(model, tmp / model, args.tiny)
        runs = {}
        for variant in RUNTIME_VARIANTS[model]:
            env = {**os.environ, "AUTOLABEL_EXPORT_CACHE": str(tmp / f"exports-{model}-{variant}")}
            command = [
                sys.executable,
                __file__,
                "runtimes-child",
                model,
                variant,
                str(model_dir),
                str(tmp / "images"),
            ]
            command += ["--threads", str(args.threads), "--box-threshold", str(args.box_threshold)]
            command += ["--max-det", str(args.max_det)]
            out = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                runs[variant] = {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
                continue
            runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{model} {variant}: {runs[variant]['s_per_image']} s/image", file=sys.stderr)
        eager = runs.get("eager", {}).get("s_per_image")
        reference = runs.get(REFERENCE[model], {}).get("detections", {})
        for variant, run in runs.items():
            if "detections" not in run:
                continue
            run["speedup_vs_eager"] = round(eager / run["s_per_image"], 3) if eager else None
            run["box_match_iou0.9_vs_" + REFERENCE[model]] = {
                str(t): dict(zip(("match", "reference_boxes"), box_match(reference, run["detections"], t)))
                for t in args.match_thresholds
            }
            run["detections"] = {
                rel: len(det.get("confidence", [])) for rel, det in run["detections"].items()
            }
        results["models"][model] = runs
    out_file = REPO / "scripts" / "results" / args.output
    out_file.write_text(json.dumps(results, indent=2))
    print(f"wrote {out_file}", file=sys.stderr)
    return results


def main() -> None:
    from autolabel.runtime import configure_environment

    configure_environment(Path(tempfile.mkdtemp(prefix="bench-propose-cache-")))  # nothing into $HOME
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--size", type=int, default=800)
    s.add_argument("--batch-size", type=int, default=2)
    s.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("memory")
    m.add_argument("--counts", type=int, nargs="+", default=[100, 10000])
    c = sub.add_parser("memory-child")
    c.add_argument("count", type=int)
    r = sub.add_parser("runtimes")
    r.add_argument("--n", type=int, default=8)
    r.add_argument("--size", type=int, nargs=2, default=[800, 600], metavar=("W", "H"))
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--models", nargs="+", default=["grounding-dino", "owlv2"], choices=list(RUNTIME_VARIANTS))
    r.add_argument("--tiny", action="store_true", help="the tests' tiny models (to check the script)")
    r.add_argument("--box-threshold", type=float, default=0.0)
    r.add_argument("--max-det", type=int, default=300)
    r.add_argument("--match-thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    r.add_argument("--output", default="bench_propose_runtimes.json")
    rc = sub.add_parser("runtimes-child")
    for name in ("model", "variant", "model_dir", "images"):
        rc.add_argument(name)
    rc.add_argument("--threads", type=int, default=2)
    rc.add_argument("--box-threshold", type=float, default=0.0)
    rc.add_argument("--max-det", type=int, default=300)
    args = parser.parse_args()
    if args.what == "memory-child":
        print(json.dumps(memory_child(args.count)))
        return
    if args.what == "runtimes-child":
        print(json.dumps(runtimes_child(args)))
        return
    handlers = {"speed": speed, "memory": memory, "runtimes": runtimes}
    result = handlers[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
