"""Which pairs should the per-class pre-label thresholds be fitted on? (issue 11, item 3)

Reads finished ``scripts/bench_al.py`` workspaces (``--workspaces /tmp/bench-al-*``): each round
r >= 1 stored the round-(r-1) student's pre-labels of batch r at the 0.05 floor, and the replay
answers. For every such round it prices correcting batch r (``studio.diff.CostModel``) with
thresholds from:

* ``fixed``: 0.25 for every class;
* ``diffs``: fitted on the earlier rounds' pre-labels and their corrections (older students);
* ``val``: fitted on the round-(r-1) student's predictions of the frozen validation images;
* ``val+diffs``: both sets of pairs;
* ``batch`` (not available to a real loop, a lower bound): fitted on batch r itself;

and drawing every box from scratch. Writes one JSON with per-round rows and the totals.

    python scripts/bench_calibration.py --workspaces /tmp/bench-al-deeppcb-* --out scripts/results/bench_calibration_deeppcb.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")


def analyse(root: Path) -> list[dict]:
    from autolabel import calibration
    from autolabel import detections as dets
    from autolabel import runs as run_registry
    from autolabel.loop import batch_ids, batch_rounds
    from autolabel.workspace import Workspace

    ws = Workspace.load(root / "ws")
    store = ws.open_store()
    n_classes = len(store.class_names())
    runs = {r.round: r for r in run_registry.all_runs(store, status="finished", kind="train")}
    imgsz = next(iter(runs.values())).params["imgsz"]
    labels = store.labels()
    rows = []
    rounds = sorted(batch_rounds(store))
    for r in rounds:
        if r == 0 or (r - 1) not in runs:
            continue
        ids = batch_ids(store, r)
        predictions = store.latest_predictions(ids, model_prefix=calibration.STUDENT_PREFIX)
        batch = [
            (dets.from_json(predictions[i][1]), dets.from_json(labels[i]))
            for i in ids
            if i in predictions and i in labels
        ]
        earlier = [i for rr in rounds if 0 < rr < r for i in batch_ids(store, rr)]
        earlier_preds = store.latest_predictions(earlier, model_prefix=calibration.STUDENT_PREFIX)
        diffs = [
            (dets.from_json(earlier_preds[i][1]), dets.from_json(labels[i]))
            for i in earlier
            if i in earlier_preds
        ]
        val = calibration.validation_pairs(ws, store, runs[r - 1].weights_path, imgsz=imgsz, device="cpu")
        fits = {
            "fixed": (calibration.DEFAULT_THRESHOLD,) * n_classes,
            "diffs": calibration.calibrate(diffs, n_classes).thresholds,
            "val": calibration.calibrate(val, n_classes).thresholds,
            "val+diffs": calibration.calibrate(val + diffs, n_classes).thresholds,
            "batch": calibration.calibrate(batch, n_classes).thresholds,
        }
        row = {"round": r, "images": len(batch), "scratch": calibration.from_scratch_seconds(batch)}
        for name, thresholds in fits.items():
            row[name] = calibration.correction_seconds(batch, thresholds)
            row[f"{name}_thresholds"] = list(thresholds)
        row["val_corrections"] = _corrections(batch, fits["val"])
        rows.append(row)
        print(
            json.dumps(
                {"workspace": root.name, **{k: v for k, v in row.items() if not k.endswith("thresholds")}}
            ),
            flush=True,
        )
    store.close()
    return rows


def _corrections(pairs, thresholds) -> dict:
    """What the annotator does with the pre-labels at ``thresholds``: kept/moved/relabeled/deleted/added boxes."""
    from autolabel import detections as dets
    from autolabel.studio.diff import diff

    total = dict.fromkeys(("kept", "moved", "relabeled", "deleted", "added", "human"), 0)
    for prediction, human in pairs:
        c = diff(dets.apply_class_thresholds(prediction, list(thresholds)), human)
        for key in total:
            total[key] += getattr(c, key)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspaces", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import tempfile

    from autolabel.runtime import configure_environment

    configure_environment(Path(tempfile.mkdtemp(prefix="bench-cal-cache-")))
    report = {"command": " ".join(sys.argv), "workspaces": {}}
    for root in args.workspaces:
        report["workspaces"][root.name] = analyse(root)
    totals: dict[str, dict[int, float]] = {}
    for rows in report["workspaces"].values():
        for row in rows:
            for key in ("scratch", "fixed", "diffs", "val", "val+diffs", "batch"):
                totals.setdefault(key, {}).setdefault(row["round"], 0.0)
                totals[key][row["round"]] += row[key]
    report["ratio_to_scratch_by_round"] = {
        key: {r: round(v / totals["scratch"][r], 3) for r, v in by_round.items()}
        for key, by_round in totals.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["ratio_to_scratch_by_round"], indent=2))


if __name__ == "__main__":
    main()
