"""Benchmark the default student recipe on BCCD: seconds per epoch and mAP50-95 on its val split.

    nice -n 10 .venv/bin/python scripts/bench_train.py --workspace /tmp/bench-bccd --epochs 25
    .venv/bin/python scripts/bench_train.py --workspace /tmp/bench-bccd --eval-only 1
    .venv/bin/python scripts/bench_train.py --workspace /tmp/bench-bccd --stopped 1 12   # after a kill
    autolabel synth --out /tmp/synth60 --n 60 --imgsz 256 --groups 10
    nice -n 10 .venv/bin/python scripts/bench_train.py --data /tmp/synth60 --val-folders g08,g09 \
        --workspace /tmp/bench-synth --epochs 40 --imgsz 256

Builds a workspace over ``../shared/datasets/bccd`` (its train split = status 'labeled', its val
split = the frozen 'validation' set, boxes from its YOLO txt as verified labels), trains through
``autolabel.train.train_student`` (the same path as ``autolabel train``), then evaluates with
``autolabel.evaluate`` and, for comparison, with ultralytics' own ``model.val()`` on the same
weights and the same materialized data.yaml. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "bccd"


def build_workspace(root: Path, data: Path, val_folders: set[str]):
    """Images under ``data/images/<folder>/``; those in ``val_folders`` become the frozen val set."""
    import yaml

    from autolabel import detections as dets
    from autolabel.config import WorkspaceConfig
    from autolabel.formats import yolo
    from autolabel.registry import register_images
    from autolabel.runtime import configure_environment
    from autolabel.workspace import Workspace

    names_map = yaml.safe_load((data / "data.yaml").read_text())["names"]
    names = [names_map[i] for i in sorted(names_map)]
    if (root / "autolabel.yaml").is_file():
        ws = Workspace.load(root)
    else:
        ws = Workspace.create(root, WorkspaceConfig(images=str((data / "images").resolve())))
    configure_environment(ws.cache_dir)
    with ws.open_store() as store:
        register_images(store, ws.image_root, ws.config.grouping)
        store.ensure_classes(names)
        labeled = store.labels()
        for image in store.images():
            if image.id in labeled:
                continue
            folder = image.path.split("/")[0]
            label_file = data / "labels" / Path(image.path).with_suffix(".txt")
            lines = label_file.read_text().splitlines() if label_file.is_file() else []
            det = yolo.from_lines(lines, image.width, image.height)
            status = "validation" if folder in val_folders else "labeled"
            store.set_labels(image.id, "import", dets.to_json(det), status=status)
    return ws


def ultralytics_val(
    weights: str, data_yaml: str, imgsz: int, device: str, single_label: bool = False
) -> dict:
    """ultralytics' own validator; ``single_label`` patches its NMS to one class per box, as predict does."""
    import ultralytics.models.yolo.detect.val as detect_val
    from ultralytics import YOLO

    from autolabel.runtime import configure_ultralytics

    configure_ultralytics()
    original = detect_val.nms.non_max_suppression

    def one_label(*args, **kwargs):
        return original(*args, **{**kwargs, "multi_label": False})

    if single_label:
        detect_val.nms.non_max_suppression = one_label
    try:
        metrics = YOLO(weights).val(
            data=data_yaml,
            imgsz=imgsz,
            device=device,
            batch=8,
            plots=False,
            verbose=False,
            project=str(Path(weights).parents[2] / "ultralytics-val"),
            exist_ok=True,
        )
    finally:
        detect_val.nms.non_max_suppression = original
    box = metrics.box
    return {
        "map50": round(float(box.map50), 5),
        "map50_95": round(float(box.map), 5),
        "precision": round(float(box.mp), 5),
        "recall": round(float(box.mr), 5),
    }


def record_stopped_run(ws, run_id: int, planned_epochs: int) -> None:
    """A training stopped by hand (time budget): record its last.pt and the epochs it reached."""
    import csv

    from autolabel import runs

    run_dir = runs.run_directory(ws, run_id)
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    cumulative = [float(r["time"]) for r in rows]
    per_epoch = [b - a for a, b in zip([0.0, *cumulative], cumulative)]
    last = rows[-1]
    metrics = {
        "stopped": f"stopped by hand after {len(rows)} of {planned_epochs} epochs (time budget)",
        "train": {
            "seconds": cumulative[-1],
            "epochs_run": len(rows),
            "seconds_per_epoch": round(sum(per_epoch) / len(per_epoch), 1),
            "epoch_seconds": [round(x, 1) for x in per_epoch],
        },
        runs.TRAINER_KEY: {
            "backend": "yolo",
            "map50": float(last["metrics/mAP50(B)"]),
            "map50_95": float(last["metrics/mAP50-95(B)"]),
            "precision": float(last["metrics/precision(B)"]),
            "recall": float(last["metrics/recall(B)"]),
        },
    }
    with ws.open_store() as store:
        runs.finish(
            store, run_id, "failed", weights_path=str(run_dir / "weights" / "last.pt"), metrics=metrics
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bench-bccd"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=None, help="default: the workspace recipe (80)")
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--val-folders", default="val", help="comma list of image folders frozen as val")
    parser.add_argument(
        "--stopped",
        type=int,
        nargs=2,
        metavar=("RUN", "PLANNED_EPOCHS"),
        help="record a run killed mid-training (its last.pt), then evaluate it",
    )
    parser.add_argument("--eval-only", type=int, default=None, metavar="RUN", help="evaluate a finished run")
    args = parser.parse_args()

    from autolabel import runs
    from autolabel.runtime import resolve_device
    from autolabel.train import TrainSettings, train_student

    ws = build_workspace(args.workspace.resolve(), args.data, set(args.val_folders.split(",")))
    if args.stopped:
        record_stopped_run(ws, *args.stopped)
        args.eval_only = args.stopped[0]
    with ws.open_store() as store:
        if args.eval_only is None:
            settings = TrainSettings.from_config(
                ws.config.train,
                epochs=args.epochs,
                imgsz=args.imgsz,
                batch=args.batch,
                model=args.model,
                device=args.device,
                evaluate=False,
            )
            run_id = train_student(
                ws, store, settings, warn=lambda m: print(f"warning: {m}", file=sys.stderr)
            )
        else:
            run_id = args.eval_only
        from autolabel.evaluate import evaluate_run  # late: a long training picks up the current code

        started = time.perf_counter()
        report = evaluate_run(ws, store, run_id)
        eval_seconds = time.perf_counter() - started
        run = runs.get(store, run_id)
        params, metrics = run.params, run.metrics
    ours = {
        k: report.metrics[k]
        for k in (
            "map50",
            "map50_95",
            "ap_small",
            "ap_medium",
            "ap_large",
            "precision",
            "recall",
            "f1",
            "conf",
            "iou",
        )
    }
    data_yaml = str(runs.run_directory(ws, run_id) / "data" / "data.yaml")
    device = resolve_device("auto")
    theirs = ultralytics_val(run.weights_path, data_yaml, params["imgsz"], device)
    theirs_single = ultralytics_val(run.weights_path, data_yaml, params["imgsz"], device, single_label=True)
    print(
        json.dumps(
            {
                "run": run_id,
                "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
                "params": params,
                "train": metrics.get("train"),
                "ultralytics_during_training": runs.trainer_metrics(metrics),
                "ours": ours,
                "per_class_ap": report.metrics["per_class_ap"],
                "ultralytics_val": theirs,  # multi_label NMS, its default in val
                "ultralytics_val_single_label": theirs_single,  # one class per box, as model.predict and ours
                "eval_seconds": round(eval_seconds, 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
