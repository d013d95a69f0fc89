"""Local engine vs Ray (1 and 2 actors) on the same model and images: img/s and memory.

    .venv/bin/python scripts/bench_engine.py --out scripts/results/bench_engine.json

Each (model, images, engine) cell runs in a fresh driver process (so its peak RSS is its own),
mapping rows of ``{id, path}`` through the same ``PoolScorer`` with the engine the loop uses
(``engines.base.LocalEngine`` / ``engines.ray.RayEngine``) and consuming the results as the loop
does (one pass, nothing kept). Models: ``yolo640``, a yolo11n (80 classes, random weights from
``yolo11n.yaml``) scoring at 640 px, whose forward dominates; ``tiny``, the tests' tiny YOLO at 64
px, where per-image overheads dominate. Images: generated 160x120 JPEGs.

Reported per cell: wall seconds from the first row to the last result (Ray's start included),
images/s, the seconds to the first result and the steady images/s after it, the driver's peak RSS and the peak of the driver plus every Ray process (sampled every
0.2 s). The local engine runs PyTorch with every core; Ray gives each actor ``cpus_per_worker``
cores (its OMP/torch threads follow). Ratios are Ray / local in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = {"local": {}, "ray-1": {"workers": "1:1", "cpus_per_worker": 2.0}, "ray-2": {"workers": "2:2"}}
MODELS = {"yolo640": 640, "tiny": 64}


def make_images(folder: Path, n: int) -> list[dict]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path, quality=80)
        rows.append({"id": i + 1, "path": str(path)})
    return rows


def make_weights(folder: Path, model: str) -> Path:
    """yolo640: yolo11n from its config, random init (80 classes); tiny: the tests' tiny YOLO."""
    sys.path.insert(0, str(REPO))
    from tests.test_pool_scorer import build_tiny_yolo

    if model == "tiny":
        return build_tiny_yolo(folder / "tiny")
    from ultralytics import YOLO

    from autolabel.runtime import configure_ultralytics

    configure_ultralytics()
    target = folder / "yolo11n-random.pt"
    folder.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        YOLO("yolo11n.yaml").save(str(target))
    return target


class RssSampler:
    """Peak RSS of this process and of this process + every Ray process, sampled in a thread."""

    def __init__(self, period: float = 0.2):
        import psutil

        self.me = psutil.Process()
        self.period = period
        self.driver = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            driver = self.me.memory_info().rss
            total = driver
            for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
                try:
                    cmd = " ".join(proc.info["cmdline"] or [])
                    if proc.pid != self.me.pid and (
                        "ray::" in cmd or "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd
                    ):
                        total += proc.info["memory_info"].rss
                except (psutil.Error, TypeError):
                    continue
            self.driver, self.total = max(self.driver, driver), max(self.total, total)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_cell(model: str, n: int, engine: str, work: Path) -> dict:
    """One cell, in this (fresh) process."""
    from functools import partial

    from autolabel.config import EngineConfig
    from autolabel.engines import make_engine
    from autolabel.runtime import configure_environment
    from autolabel.sampling.scorer import PoolScorer, ScorerSettings

    configure_environment(work / "cache")
    rows = make_images(work / "images", n)
    weights = make_weights(work / "weights", model)
    settings = ScorerSettings(imgsz=MODELS[model], device="cpu", flip=False)
    config = EngineConfig(kind="local" if engine == "local" else "ray", **ENGINES[engine])
    runner = make_engine(config, work / "ws")
    if engine == "local":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    pages = [rows[i : i + 512] for i in range(0, len(rows), 512)]
    done = errors = 0
    first = None
    with RssSampler() as rss:
        start = time.perf_counter()
        for result in runner.map(partial(PoolScorer, weights, settings), pages, batch_size=8):
            if first is None:
                first = time.perf_counter()
            done += 1
            errors += result["error"] is not None
        seconds = time.perf_counter() - start
    runner.close()
    return {
        "model": model,
        "images": n,
        "engine": engine,
        "results": done,
        "errors": errors,
        "seconds": round(seconds, 2),
        "images_per_second": round(done / seconds, 2),
        # start-up (Ray's start, model loads, the first batch) vs the steady state after it
        "first_result_seconds": round(first - start, 2) if first else None,
        "steady_images_per_second": round((done - 1) / (start + seconds - first), 2)
        if first and done > 1
        else None,
        "driver_peak_rss_mb": round(rss.driver / 2**20, 1),
        "total_peak_rss_mb": round(rss.total / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument(
        "--max-images", type=str, default="yolo640=1000", help="per model cap, e.g. yolo640=1000"
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "autolabel-bench-engine")
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "results" / "bench_engine.json")
    parser.add_argument("--cell", nargs=3, metavar=("MODEL", "N", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if args.cell:
        model, n, engine = args.cell
        print(json.dumps(run_cell(model, int(n), engine, args.work)))
        return
    caps = dict(item.split("=") for item in args.max_images.split(",") if item)
    cells = []
    for model in args.models:
        for n in args.images:
            if model in caps and n > int(caps[model]):
                continue
            for engine in args.engines:
                cmd = [sys.executable, __file__, "--work", str(args.work), "--cell", model, str(n), engine]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
                line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
                if out.returncode != 0 or not line.startswith("{"):
                    cell = {"model": model, "images": n, "engine": engine, "failed": out.stderr[-800:]}
                else:
                    cell = json.loads(line)
                print(json.dumps(cell), flush=True)
                cells.append(cell)
    by = {(c["model"], c["images"], c["engine"]): c for c in cells if "failed" not in c}
    for c in cells:
        local = by.get((c["model"], c["images"], "local"))
        if local and "failed" not in c:
            c["speed_vs_local"] = round(c["images_per_second"] / local["images_per_second"], 3)
            if c.get("steady_images_per_second") and local.get("steady_images_per_second"):
                c["steady_speed_vs_local"] = round(
                    c["steady_images_per_second"] / local["steady_images_per_second"], 3
                )
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()},
        "cells": cells,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
