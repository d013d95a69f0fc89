"""What ``autolabel status`` reports, as plain data (the CLI renders it)."""

from __future__ import annotations

import json

from autolabel import runs
from autolabel.store import IMAGE_STATUSES, Store


def collect_status(store: Store) -> dict:
    counts = store.status_counts()
    proposals = store.prediction_summary()
    labeled = store.labels()
    return {
        "images": {s: counts.get(s, 0) for s in IMAGE_STATUSES},
        "classes": store.class_names(),
        "proposals": proposals,
        "labeled_images": len(labeled),
        "labeled_boxes": sum(len(json.loads(v).get("xyxy", [])) for v in labeled.values()),
        "runs": training_runs(store),
        "quarantined": _quarantined(store),
    }


def _quarantined(store: Store) -> list[dict]:
    """Label Studio annotations held back from the labels, with the reason (none before a pull)."""
    from autolabel.studio.state import quarantined

    return quarantined(store)


RUN_METRICS = ("map50", "map50_95", "precision", "recall", "f1", "ap_small", "ap_medium", "ap_large")


def training_runs(store: Store) -> list[dict]:
    """Every training run: round, state, data sizes, the weights its lineage started from, and its
    frozen-val metrics (None until evaluated)."""
    return [
        {
            "id": run.id,
            "round": run.round,
            "status": run.status,
            "n_train": run.n_train,
            "n_val": run.n_val,
            "started_from": run.started_from,
            "pretrained": run.origin[1],
            "warm_start": run.params.get("resume_from") is not None,
            "epochs": run.params.get("epochs"),
            "imgsz": run.params.get("imgsz"),
            **{k: run.metrics.get(k) for k in RUN_METRICS},
        }
        for run in runs.all_runs(store, kind="train")
    ]


def round_table(store: Store) -> list[dict]:
    """One row per evaluated loop round: labels, human time, proposer P/R, student metrics."""
    from autolabel.loop import loop_started, round_history

    if not loop_started(store):
        return []
    from autolabel.studio.state import round_summaries

    corrections = {r["round"]: r for r in round_summaries(store)}
    from autolabel.calibration import recorded_thresholds

    names = store.class_names()
    fitted = recorded_thresholds(store)
    boxes = _labeled_boxes_by_round(store)
    table, seconds, total_boxes = [], 0.0, 0
    for entry in round_history(store):
        diff = corrections.get(entry["round"], {})
        seconds += diff.get("seconds") or 0.0
        total_boxes += boxes.get(entry["round"], 0)
        fit = fitted.get(entry["round"])
        table.append(
            {
                "round": entry["round"],
                "labels": entry.get("labels"),
                "boxes": total_boxes,
                "human_seconds": round(seconds, 1),
                "round_seconds": diff.get("seconds"),
                "round_seconds_from_scratch": diff.get("seconds_from_scratch"),
                "proposer_precision": diff.get("precision"),
                "proposer_recall": diff.get("recall"),
                "map50": entry.get("map50"),
                "map50_95": entry.get("map50_95"),
                "f1": entry.get("f1"),
                "thresholds": None if fit is None else dict(zip(names, fit.thresholds)),
            }
        )
    return table


def _labeled_boxes_by_round(store: Store) -> dict[int, int]:
    """Human boxes of each round's batch (the images the loop selected that round)."""
    from autolabel.loop import batch_rounds

    out: dict[int, int] = {}
    labels = store.labels()
    for rnd, image_ids in batch_rounds(store).items():
        for image_id in image_ids:
            if image_id in labels:
                out[rnd] = out.get(rnd, 0) + len(json.loads(labels[image_id]).get("xyxy", []))
    return out


def status_report(store: Store) -> dict:
    """Everything ``autolabel status`` shows, as one JSON-ready value (``status --json``).
    Training runs killed mid-way are marked failed first, so none shows as 'started' forever."""
    runs.reconcile_interrupted(store)
    return {**collect_status(store), "rounds": round_table(store)}


def plot_rounds(table: list[dict], out_path) -> None:
    """mAP against labeled images and against estimated human time, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = [r["labels"] for r in table]
    hours = [r["human_seconds"] / 3600 for r in table]
    for metric, style in (("map50_95", "o-"), ("map50", "s--")):
        values = [r[metric] if r[metric] is not None else float("nan") for r in table]
        axes[0].plot(labels, values, style, label=metric)
        axes[1].plot(hours, values, style, label=metric)
    axes[0].set_xlabel("labeled images")
    axes[1].set_xlabel("estimated human time (h)")
    for ax in axes:
        ax.set_ylabel("frozen-val mAP")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("student quality per active-learning round")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
