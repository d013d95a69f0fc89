"""Training cost of the two students on this CPU: YOLO11n vs D-FINE-N, same data, same budget.

    nice -n 10 .venv/bin/python scripts/bench_students.py --n-train 100 --n-val 20 --epochs 2 --imgsz 320

Both train through ``autolabel.train.train_student`` (the path of ``autolabel train``) on the same
BCCD subset (``../shared/datasets/bccd``: the first ``--n-train`` images of its train split, the
first ``--n-val`` of its val split, its own YOLO labels as verified labels), at the same image size,
batch, epochs and seed, each student in its own subprocess so its peak RSS is its own
(``getrusage(RUSAGE_SELF).ru_maxrss`` of that process: the libraries, the data and the training).

* YOLO11n: the COCO-pretrained ``yolo11n-coco.pt`` passed by path (``--yolo-weights``).
* D-FINE-N: no pretrained D-FINE weights are here, so its full-size architecture
  (``ustc-community/dfine-nano-coco``'s config values, ``tests.tiny_models.write_dfine_nano_config``)
  is built with random weights: the same compute per step as the real checkpoint.

Accuracy is NOT compared: a COCO-pretrained YOLO against a random-init D-FINE after a few epochs
says nothing about the two architectures (their published COCO AP: YOLO11n 39.5, D-FINE-N 42.8).
Both train on ``--threads`` torch threads (default 1: what ultralytics picks on a 2-CPU machine).
Per-epoch seconds include the validation pass of the last epoch (``val_each_epoch`` off for both).
Raw JSON goes to ``scripts/results/bench_students.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' model builders (tests/tiny_models.py)
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "bccd"
DEFAULT_YOLO = REPO.parent / "shared" / "weights" / "yolo11n-coco.pt"
STUDENTS = ("yolo", "dfine-n")


def subset(data: Path, out: Path, n_train: int, n_val: int) -> Path:
    """``out`` with copies of the first images (and their labels) of each split, and data.yaml
    (copies: the image registry refuses symlinks that lead out of the image folder)."""
    import shutil

    for split, n in (("train", n_train), ("val", n_val)):
        for kind in ("images", "labels"):
            (out / kind / split).mkdir(parents=True, exist_ok=True)
        for image in sorted((data / "images" / split).iterdir())[:n]:
            label = data / "labels" / split / f"{image.stem}.txt"
            for source, target in ((image, out / "images" / split / image.name),
                                   (label, out / "labels" / split / label.name)):  # fmt: skip
                if source.is_file() and not target.exists():
                    shutil.copyfile(source, target)
    (out / "data.yaml").write_text((data / "data.yaml").read_text())
    return out


def train_one(args) -> dict:
    """In the child: train one student and report its cost."""
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_train import build_workspace

    from autolabel import runs
    from autolabel.train import TrainSettings, train_student

    root = args.workspace.resolve()
    data = subset(args.data, root / "data", args.n_train, args.n_val)
    if args.child == "yolo":
        model = str(args.yolo_weights.resolve())
    else:
        from tests.tiny_models import write_dfine_nano_config

        model = str(write_dfine_nano_config(root / "dfine-nano.json", num_labels=3))
    ws = build_workspace(root / args.child, data, {"val"})
    import torch

    torch.set_num_threads(args.threads)  # ultralytics sets its own: min(8, CPUs - 1)

    with ws.open_store() as store:
        settings = TrainSettings.from_config(
            ws.config.train, student=args.child, model=model, epochs=args.epochs, imgsz=args.imgsz,
            batch=args.batch, seed=0, device="cpu", evaluate=False, val_each_epoch=False, plots=False,
        )  # fmt: skip
        started = time.perf_counter()
        run_id = train_student(ws, store, settings, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
        wall = time.perf_counter() - started
        run = runs.get(store, run_id)
    from autolabel import students

    student = students.load(run.weights_path)
    net = student.model.model if args.child == "yolo" else student.model  # the unfused network
    return {
        "student": args.child,
        "model": Path(model).name,
        "pretrained": run.params["pretrained"],
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
        "n_train": run.n_train,
        "n_val": run.n_val,
        "train": run.metrics["train"],
        "epoch_seconds": _epoch_seconds(runs.run_directory(ws, run_id) / "results.csv"),
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def _epoch_seconds(results_csv: Path) -> list[float]:
    import csv

    with results_csv.open() as fh:
        cumulative = [float(row["time"]) for row in csv.DictReader(fh) if row.get("time")]
    return [round(b - a, 2) for a, b in zip([0.0, *cumulative], cumulative)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--yolo-weights", type=Path, default=DEFAULT_YOLO)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bench-students"))
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-val", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (ultralytics uses CPUs - 1: 1 on 2 CPUs)"
    )
    parser.add_argument("--students", default=",".join(STUDENTS))
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "results" / "bench_students.json")
    parser.add_argument("--child", choices=STUDENTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_one(args)))
        return 0
    if not args.yolo_weights.is_file():
        print(f"error: {args.yolo_weights} not found (--yolo-weights)", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1",
           "OMP_NUM_THREADS": str(args.threads)}  # fmt: skip
    results, load_before = [], os.getloadavg()
    for student in args.students.split(","):
        child = [sys.executable, __file__, "--child", student]
        for flag in (
            "data",
            "yolo_weights",
            "workspace",
            "n_train",
            "n_val",
            "epochs",
            "imgsz",
            "batch",
            "threads",
        ):
            child += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        done = subprocess.run(child, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]))
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "budget": {k: getattr(args, k) for k in ("n_train", "n_val", "epochs", "imgsz", "batch", "threads")},
        "note": "training cost only; accuracy is not compared (no pretrained D-FINE weights here)",
        "students": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
