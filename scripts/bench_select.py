"""Selection cost: hybrid pick of a batch from a large pool of embeddings, on this machine's CPU.

    nice -n 10 .venv/bin/python scripts/bench_select.py                  # hybrid 1,000 of 100,000 x 512
    nice -n 10 .venv/bin/python scripts/bench_select.py --full-k-center  # + k-center over all 100,000
    nice -n 10 .venv/bin/python scripts/bench_select.py --score-images 64 --imgsz 640  # + pool scoring

Embeddings are a seeded mixture of Gaussian clusters (float32), uncertainty scores uniform random;
the cost does not depend on their values. Times are wall-clock seconds of the ``select`` call
alone (data generation excluded), the best of ``--repeats`` runs, with that run's process CPU
seconds (on a shared machine wall time also counts waiting for a core).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from autolabel.sampling.select import select


def make_pool(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32) * 3
    embeddings = rng.standard_normal((n, dim), dtype=np.float32)
    embeddings += centers[rng.integers(0, clusters, n)]
    return embeddings, rng.random(n)


def timed(fn, repeats: int) -> tuple[float, float, list]:
    """Best wall-clock seconds, the CPU seconds of that run, and the result."""
    best, cpu, result = float("inf"), 0.0, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--budget", type=int, default=1_000)
    parser.add_argument("--prefilter-factor", type=float, default=4.0)
    parser.add_argument("--labeled", type=int, default=5_000, help="labeled images (0 to skip that case)")
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-k-center", action="store_true", help="also k-center over the whole pool")
    parser.add_argument("--score-images", type=int, default=0, help="also time PoolScorer on N images")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.score_images:
        bench_scoring(args)

    embeddings, scores = make_pool(args.pool, args.dim, args.clusters, args.seed)
    labeled, _ = (
        make_pool(args.labeled, args.dim, args.clusters, args.seed + 1) if args.labeled else (None, None)
    )
    ids = list(range(args.pool))
    common = {"scores": scores, "embeddings": embeddings, "seed": args.seed}
    cases = [("hybrid", "hybrid, nothing labeled", {"prefilter_factor": args.prefilter_factor})]
    if labeled is not None:
        cases.append(
            (
                "hybrid",
                f"hybrid, {args.labeled:,} labeled",
                {"prefilter_factor": args.prefilter_factor, "labeled_embeddings": labeled},
            )
        )
    cases.append(("uncertainty", "uncertainty (top-k only)", {}))
    if args.full_k_center:
        cases.append(("diversity", f"k-center over all {args.pool:,}", {}))

    print(
        f"pool {args.pool:,} x {args.dim} float32, budget {args.budget:,},"
        f" prefilter x{args.prefilter_factor:g} | {platform.machine()}, {os.cpu_count()} cpus"
    )
    results = []
    for strategy, label, extra in cases:
        repeats = 1 if strategy == "diversity" else args.repeats
        seconds, cpu, picked = timed(
            lambda strategy=strategy, extra=extra: select(strategy, args.budget, ids, **common, **extra),
            repeats,
        )
        assert len(picked) == args.budget and len(set(picked)) == args.budget
        results.append({"case": label, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3)})
        print(f"{label:<32} {seconds:8.2f} s wall {cpu:8.2f} s cpu")
    print(json.dumps({"pool": args.pool, "dim": args.dim, "budget": args.budget, "results": results}))


def bench_scoring(args) -> None:
    """Images per second through PoolScorer (yolo11n from its config, random weights: the forward
    passes cost what a trained student's do; NMS is cheaper with few boxes)."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from autolabel.runtime import configure_environment
    from autolabel.sampling.scorer import PoolScorer, ScorerSettings, score_pool

    with tempfile.TemporaryDirectory() as tmp:
        configure_environment(Path(tmp) / "cache")
        rng = np.random.default_rng(args.seed)
        rows = []
        for i in range(args.score_images):
            path = Path(tmp) / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
            rows.append({"id": i, "path": str(path)})
        for flip in (False, True):
            scorer = PoolScorer(
                "yolo11n.yaml", ScorerSettings(imgsz=args.imgsz, device=args.device, flip=flip)
            )
            list(score_pool(scorer, rows[: args.batch_size], args.batch_size))  # warm-up
            start = time.perf_counter()
            list(score_pool(scorer, rows, args.batch_size))
            rate = len(rows) / (time.perf_counter() - start)
            print(f"scoring 640x480 at imgsz {args.imgsz}, flip={flip}: {rate:.2f} img/s ({args.device})")


if __name__ == "__main__":
    main()
