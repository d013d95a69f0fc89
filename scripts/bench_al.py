"""Active-learning benchmark (issue 5): random vs uncertainty vs hybrid at equal budgets per round.

Each (dataset, strategy, seed) runs the real loop machinery (``autolabel.loop.run_loop`` with the
library's select / split / train / eval steps); the human is a noise-free replay annotator that
copies the ground truth of the selected images into the store (the same answers the Label Studio
replay annotator gives, without the HTTP round trip). Validation is a fixed, frozen set. Every round
warm-starts from the previous round's student. Round 0 is the same seeded random batch for every
strategy, so the curves start together.

    python scripts/bench_al.py --dataset scenes --rounds 5 --initial-budget 40 --budget 40 --epochs 20 --imgsz 160
    python scripts/bench_al.py --dataset bccd --rounds 5 --initial-budget 30 --budget 30 --epochs 20 --imgsz 224

With pretrained weights on disk (none can be downloaded here), ``--model /path/to/yolo11n.pt`` runs
the fine-tuning regime, where active learning is usually reported to pay off.

Per-epoch validation is off by default here (--val-each-epoch turns it on): each round's student is
its last epoch and the frozen val set is only used to report, never to pick a checkpoint.
Results are written after every run; rerunning the same command skips the runs already in the JSON.

Writes results JSON and a plot of mAP50-95 against labeled images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
SHARED = REPO.parent / "shared" / "datasets"
DATASETS = ("scenes", "bccd", "deeppcb")


def prepare_dataset(name: str, root: Path, args) -> tuple[Path, list[str]]:
    """A folder with ``images/{pool,val}/...`` and ``labels/{pool,val}/...`` (YOLO), and class names."""
    import shutil

    import yaml

    if (root / "names.json").exists():
        return root, json.loads((root / "names.json").read_text())
    if name in ("bccd", "deeppcb"):  # the shared real sets: their train split is the pool, val is frozen
        source = SHARED / name
        names = yaml.safe_load((source / "data.yaml").read_text())["names"]
        names = list(names.values()) if isinstance(names, dict) else list(names)
        for split, part in (("train", "pool"), ("val", "val")):
            (root / "images" / part).mkdir(parents=True)
            (root / "labels" / part).mkdir(parents=True)
            for image in sorted((source / "images" / split).iterdir()):
                shutil.copy2(
                    image, root / "images" / part / image.name
                )  # init refuses links out of the folder
                label = source / "labels" / split / f"{image.stem}.txt"
                if label.exists():
                    (root / "labels" / part / label.name).symlink_to(label)
    else:
        from autolabel.synthetic import CLASS_NAMES, generate_dataset

        names = list(CLASS_NAMES)
        for part, n, seed in (("pool", args.pool, 1), ("val", args.val, 2)):
            generate_dataset(root / "tmp" / part, n=n, seed=seed, imgsz=args.imgsz, groups=max(1, n // 10))
            for kind in ("images", "labels"):
                shutil.move(str(root / "tmp" / part / kind), str(root / kind / part))
        shutil.rmtree(root / "tmp")
    (root / "names.json").write_text(json.dumps(names))
    return root, names


def build_workspace(root: Path, data: Path, names: list[str]):
    from autolabel import detections as dets
    from autolabel.config import WorkspaceConfig
    from autolabel.formats import yolo
    from autolabel.registry import register_images
    from autolabel.workspace import Workspace

    ws = Workspace.create(root / "ws", WorkspaceConfig(images=str(data / "images")))
    store = ws.open_store()
    store.ensure_classes(names)
    register_images(store, ws.image_root, ws.config.grouping)
    for image in store.images():
        if image.path.startswith("val/"):
            det = yolo.from_lines(_label_lines(data, image.path), image.width, image.height)
            store.set_labels(image.id, "import", dets.to_json(det), status="validation")
    return ws, store


def _label_lines(data: Path, rel_path: str) -> list[str]:
    label = (data / "labels" / rel_path).with_suffix(".txt")
    return label.read_text().splitlines() if label.exists() else []


def oracle_step(data: Path):
    """The replay annotator without HTTP: ground truth for the round's batch goes into the store.

    Before it answers, the human-time estimate of the round (``studio.diff.CostModel``): correcting
    the student's pre-labels of the batch at the calibrated per-class thresholds the loop recorded
    for the round, at a fixed 0.25, and drawing every box from scratch.
    """

    def step(ctx, round_index):
        from autolabel import calibration
        from autolabel import detections as dets
        from autolabel.formats import yolo
        from autolabel.loop import batch_ids

        store = ctx.store
        ids = batch_ids(store, round_index)
        truth = {}
        for image in store.images(ids=ids):
            truth[image.id] = yolo.from_lines(_label_lines(data, image.path), image.width, image.height)
        predictions = store.latest_predictions(ids, model_prefix=calibration.STUDENT_PREFIX)
        pairs = [(dets.from_json(predictions[i][1]), truth[i]) for i in ids if i in predictions]
        n_classes = len(store.class_names())
        fit = calibration.recorded_thresholds(store).get(round_index)
        time_report = {
            "seconds_scratch": calibration.from_scratch_seconds([(None, d) for d in truth.values()])
        }
        if pairs:
            time_report.update(
                prelabeled=len(pairs),
                thresholds=list(fit.thresholds) if fit else None,
                seconds_calibrated=calibration.correction_seconds(pairs, fit.thresholds) if fit else None,
                seconds_fixed=calibration.correction_seconds(
                    pairs, [calibration.DEFAULT_THRESHOLD] * n_classes
                ),
                seconds_scratch_prelabeled=calibration.from_scratch_seconds(pairs),
            )
        for image_id, det in truth.items():
            store.set_labels(image_id, "replay", dets.to_json(det))
        return {"labeled": len(store.labels()), "boxes": sum(len(d) for d in truth.values()), **time_report}

    return step


def run_one(dataset: str, strategy: str, seed: int, args, data_root: Path) -> dict:
    from dataclasses import replace

    from autolabel.loop import run_loop
    from autolabel.loop_steps import RoundContext, step_eval, step_prelabel, step_select, step_train
    from autolabel.recipe import Recipe

    data, names = prepare_dataset(dataset, data_root, args)
    root = Path(tempfile.mkdtemp(prefix=f"bench-al-{dataset}-{strategy}-{seed}-"))
    ws, store = build_workspace(root, data, names)
    recipe = Recipe(
        rounds=args.rounds,
        budget=args.budget,
        initial_budget=args.initial_budget or args.budget,
        strategy="hybrid" if strategy == "coldstart" else strategy,
        score=args.score,
        seed=seed,
        plateau={"patience": args.rounds, "min_delta": 0.0},
        train={
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "batch": 16,
            "model": args.model,
            "warm_start": True,
            "seed": seed,
            "device": "auto",
            "val_each_epoch": args.val_each_epoch,
        },
    )

    def select(ctx, round_index):
        if round_index == 0 and strategy != "coldstart":  # the same seeded random start for every strategy
            return step_select(replace(ctx, recipe=recipe.with_overrides(strategy="random")), round_index)
        return step_select(ctx, round_index)

    ctx = RoundContext(store=store, recipe=recipe, log=lambda m: None, workspace=ws)
    started = time.perf_counter()
    outcome = run_loop(
        ctx,
        [
            ("select", select),
            ("prelabel", step_prelabel),
            ("label", oracle_step(data)),
            ("train", step_train),
            ("eval", step_eval),
        ],
    )
    n_val = len(store.images(status="validation"))
    labeled = _label_results(store)
    boxes = [r.get("boxes", 0) for r in labeled]
    curve = []
    for h in outcome.history:
        point = {
            "round": h["round"],
            "labels": h["labels"] - n_val,
            "boxes": sum(boxes[: h["round"] + 1]),
            "map50_95": h.get("map50_95") or 0.0,
            "map50": h.get("map50") or 0.0,
            "f1": h.get("f1"),
        }
        point.update(
            {k: v for k, v in labeled[h["round"]].items() if k.startswith(("seconds", "thresholds", "prel"))}
        )
        curve.append(point)
    return {
        "dataset": dataset,
        "strategy": strategy,
        "seed": seed,
        "curve": curve,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _label_results(store) -> list[dict]:
    from autolabel.loop import step_results

    return [result for _, result in step_results(store, "label")]


def labels_to_reach(curve: list[dict], target: float) -> int | None:
    for point in curve:
        if point["map50_95"] >= target:
            return point["labels"]
    return None


def summarize(results: list[dict]) -> dict:
    import numpy as np

    by_strategy: dict[str, list[dict]] = {}
    for r in results:
        by_strategy.setdefault(r["strategy"], []).append(r)

    def per_round_mean(key: str, digits: int) -> dict[str, list[float]]:
        return {
            s: np.mean([[p[key] for p in r["curve"]] for r in runs], axis=0).round(digits).tolist()
            for s, runs in by_strategy.items()
        }

    mean_curves, mean_boxes = per_round_mean("map50_95", 4), per_round_mean("boxes", 1)
    labels = [p["labels"] for p in results[0]["curve"]]
    summary = {
        "labels": labels,
        "mean_map50_95": mean_curves,
        "mean_boxes": mean_boxes,
        "seeds": sorted({r["seed"] for r in results}),
        "time_ratio": _time_ratios(by_strategy),
    }
    if "random" in mean_curves:
        target = mean_curves["random"][-1]
        summary["random_final"] = target
        for s, curve in mean_curves.items():
            reach = next((labels[i] for i, v in enumerate(curve) if v >= target), None)
            summary[f"{s}_labels_to_reach_random_final"] = reach
            summary[f"{s}_labels_to_reach_random_final_interpolated"] = _interpolated_reach(
                labels, curve, target
            )
            summary[f"{s}_boxes_to_reach_random_final_interpolated"] = _interpolated_reach(
                mean_boxes[s], curve, target
            )
            summary[f"{s}_fraction_of_random_labels"] = (
                None if reach is None else round(reach / labels[-1], 3)
            )
            # equal budget: mean over rounds after round 0 of (strategy - random) mAP50-95
            diffs = np.asarray(curve[1:]) - np.asarray(mean_curves["random"][1:])
            summary[f"{s}_minus_random_mean"] = round(float(diffs.mean()), 4) if diffs.size else None
    return summary


def _time_ratios(by_strategy: dict[str, list[dict]]) -> dict:
    """Per strategy and round (from 1): estimated correction time of the student's pre-labels over
    drawing the same boxes from scratch, summed over seeds, at the calibrated and at the fixed 0.25
    thresholds (``studio.diff.CostModel``)."""
    out = {}
    for strategy, runs in by_strategy.items():
        rows = {}
        for r in runs:
            for p in r["curve"]:
                if p.get("seconds_scratch_prelabeled"):
                    acc = rows.setdefault(p["round"], {"calibrated": 0.0, "fixed": 0.0, "scratch": 0.0})
                    acc["calibrated"] += p.get("seconds_calibrated") or 0.0
                    acc["fixed"] += p.get("seconds_fixed") or 0.0
                    acc["scratch"] += p["seconds_scratch_prelabeled"]
        out[strategy] = {
            str(rnd): {
                "calibrated": round(a["calibrated"] / a["scratch"], 3),
                "fixed_0.25": round(a["fixed"] / a["scratch"], 3),
            }
            for rnd, a in sorted(rows.items())
        }
    return out


def _interpolated_reach(labels: list[float], curve: list[float], target: float) -> float | None:
    """Labels (or boxes) at which the mean curve first crosses ``target``, linear between rounds."""
    for i, value in enumerate(curve):
        if value >= target:
            if i == 0 or value == curve[i - 1]:
                return float(labels[i])
            t = (target - curve[i - 1]) / (value - curve[i - 1])
            return round(labels[i - 1] + t * (labels[i] - labels[i - 1]), 1)
    return None


def plot(results: list[dict], summary: dict, out: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_images, by_boxes) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = {s: f"C{i}" for i, s in enumerate(summary["mean_map50_95"])}
    for strategy, curve in summary["mean_map50_95"].items():
        by_images.plot(
            summary["labels"], curve, "o-", color=colors[strategy], label=f"{strategy} (mean of seeds)"
        )
    for r in results:
        color = colors[r["strategy"]]
        by_images.plot(
            [p["labels"] for p in r["curve"]],
            [p["map50_95"] for p in r["curve"]],
            ":",
            alpha=0.4,
            color=color,
        )
        by_boxes.plot(
            [p["boxes"] for p in r["curve"]],
            [p["map50_95"] for p in r["curve"]],
            ".-",
            alpha=0.7,
            color=color,
            label=f"{r['strategy']} seed {r['seed']}",
        )
    by_images.set_xlabel("labeled images")
    by_boxes.set_xlabel("labeled boxes")
    by_images.set_ylabel("frozen-val mAP50-95")
    for ax in (by_images, by_boxes):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=DATASETS, default="scenes")
    parser.add_argument(
        "--strategies", nargs="+", default=["random", "uncertainty", "hybrid"],
        help="random | uncertainty | hybrid | diversity | coldstart (hybrid whose round 0 is the library's own "
             "cold start: typicality over the pretrained backbone's embeddings, instead of the shared random start)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--initial-budget", type=int, default=None, help="round 0 (default: --budget)")
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument(
        "--epochs", type=int, default=20, help="per round, warm-started from the previous round"
    )
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--pool", type=int, default=600, help="scenes: unlabeled pool size")
    parser.add_argument("--val", type=int, default=100, help="scenes: frozen validation size")
    parser.add_argument("--val-each-epoch", action="store_true")
    parser.add_argument("--score", default="entropy_sum", help="uncertainty key (recipe 'score')")
    parser.add_argument(
        "--model", default="yolo11n.yaml",
        help="student: a yaml (random init) or local pretrained weights such as yolo11n.pt",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "scripts" / "results")
    args = parser.parse_args()
    from autolabel.runtime import configure_environment

    cache = Path(tempfile.mkdtemp(prefix="bench-al-cache-"))
    configure_environment(cache)
    data_root = cache / "data"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_al_{args.dataset}"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "seeds", "strategies")}
    for key, default in (("model", "yolo11n.yaml"), ("score", "entropy_sum")):
        if settings[key] == default:  # results written before these options existed stay reusable
            del settings[key]
    previous = (
        json.loads((args.out / f"{stem}.json").read_text()) if (args.out / f"{stem}.json").exists() else {}
    )
    results = [r for r in previous.get("runs", []) if previous.get("settings") == settings]
    done = {(r["strategy"], r["seed"]) for r in results}
    for seed in args.seeds:
        for strategy in args.strategies:
            if (strategy, seed) in done:
                continue
            result = run_one(args.dataset, strategy, seed, args, data_root)
            print(json.dumps(result), flush=True)
            results.append(result)
            report = {"command": " ".join(sys.argv), "settings": settings, "runs": results}
            (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    summary = summarize(results)
    report = {"command": " ".join(sys.argv), "settings": settings, "runs": results, "summary": summary}
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    title = (
        f"{args.dataset}: {args.rounds} rounds, {args.initial_budget or args.budget}+{args.budget} images/round, "
        f"{args.epochs} epochs/round warm-started, imgsz {args.imgsz}, "
        + ("yolo11n from scratch" if args.model.endswith(".yaml") else Path(args.model).name)
    )
    plot(results, summary, args.out / f"{stem}.png", title)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
