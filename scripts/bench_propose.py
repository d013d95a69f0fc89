"""Benchmark the propose engine (issue 2). Results go to BENCHMARKS.md with the exact command.

speed:  full-size grounding-dino-tiny architecture (random weights: nothing can be downloaded here),
        N images of SIZE px: (a) model forward only, inputs prepared beforehand; (b) the engine end to
        end (background decode, preprocess, forward, postprocess, SQLite writes); (c) a naive per-image
        loop (load, preprocess, forward, postprocess one image at a time, as autodistill does).
        Target: (b) / (a) >= 0.9.
memory: peak RSS of the engine over 100 vs 10,000 small images with a tiny model, each in a fresh
        subprocess. Target: flat within 10%.

    python scripts/bench_propose.py speed --n 8 --size 800
    python scripts/bench_propose.py memory --counts 100 10000
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
    args = parser.parse_args()
    if args.what == "memory-child":
        print(json.dumps(memory_child(args.count)))
        return
    result = speed(args) if args.what == "speed" else memory(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
