"""Does the model EMA pay for the D-FINE student? The same run with ``train.ema`` on and off.

    nice -n 10 .venv/bin/python scripts/bench_dfine_ema.py --n 80 --epochs 40 --imgsz 128

Generated scenes (``autolabel.synthetic``, two of the groups frozen as validation), one D-FINE built
from a config with random weights (default: the tiny test config; ``--config`` for another), the
same seed, data and schedule for both arms, trained through ``autolabel.train.train_student`` and
evaluated on the frozen val set with ``autolabel.evaluate.evaluate_run``. Prints and writes one
JSON object (``scripts/results/bench_dfine_ema.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bench-dfine-ema"))
    parser.add_argument("--config", type=Path, default=None, help="a DFineConfig json (default: tiny)")
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "results" / "bench_dfine_ema.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench_train import build_workspace

    from autolabel import runs
    from autolabel.evaluate import evaluate_run
    from autolabel.students.ema import EMA_DECAY, EMA_WARMUPS
    from autolabel.synthetic import generate_dataset
    from autolabel.train import TrainSettings, train_student
    from tests.tiny_models import write_tiny_dfine_config

    root = args.workspace.resolve()
    data = root / "scenes"
    if not (data / "data.yaml").is_file():
        generate_dataset(data, n=args.n, seed=0, imgsz=args.imgsz, groups=args.groups)
    val_folders = {f"g{g:02d}" for g in range(args.groups - 2, args.groups)}
    config = args.config or write_tiny_dfine_config(root / "tiny-dfine.json", num_labels=4)
    arms = {}
    for ema in (True, False):
        ws = build_workspace(root / f"ema-{'on' if ema else 'off'}", data, val_folders)
        with ws.open_store() as store:
            settings = TrainSettings.from_config(
                ws.config.train, student="dfine-n", model=str(config), epochs=args.epochs, imgsz=args.imgsz,
                batch=args.batch, seed=0, device="cpu", ema=ema, evaluate=False, patience=0,
            )  # fmt: skip
            run_id = train_student(ws, store, settings)
            report = evaluate_run(ws, store, run_id)
            run = runs.get(store, run_id)
        arms["on" if ema else "off"] = {
            **{k: report.metrics[k] for k in ("map50", "map50_95", "precision", "recall", "f1")},
            "trainer": run.metrics["trainer"],
            "seconds_per_epoch": run.metrics["train"]["seconds_per_epoch"],
            "n_train": run.n_train,
            "n_val": run.n_val,
        }
        print(json.dumps({"ema": ema, **arms["on" if ema else "off"]}), flush=True)
    steps = args.epochs * -(-arms["on"]["n_train"] // args.batch)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": str(config),
        "ema": {"decay": EMA_DECAY, "warmups": EMA_WARMUPS, "optimizer_steps": steps},
        "arms": arms,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
