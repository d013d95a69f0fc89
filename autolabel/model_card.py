"""The model card written next to the exported files: ``MODEL_CARD.md`` and ``model_card.json``.

``build_card`` gathers plain values (no secrets: only whitelisted run parameters are copied),
``render_markdown`` is a pure function of the card, ``write_card`` is the thin file shell.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autolabel.runs import Run
    from autolabel.store import Store

CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
# Run parameters safe and useful to publish; anything else (paths, URLs, keys) stays out.
PUBLIC_PARAMS = (
    "model",
    "epochs",
    "imgsz",
    "batch",
    "seed",
    "patience",
    "close_mosaic",
    "conf",
    "lr0",
    "optimizer",
)
METRIC_KEYS = ("map50", "map50_95", "ap_small", "ap_medium", "ap_large", "precision", "recall", "f1", "conf")


def labels_summary(store: Store) -> dict:
    """How many human-verified images and boxes the store holds, by source."""
    from autolabel import detections as dets

    by_source: dict[str, dict[str, int]] = {}
    for source, detections_json in store.labels_with_source():
        entry = by_source.setdefault(source, {"images": 0, "boxes": 0})
        entry["images"] += 1
        entry["boxes"] += len(dets.from_json(detections_json))
    return {
        "by_source": by_source,
        "images": sum(e["images"] for e in by_source.values()),
        "boxes": sum(e["boxes"] for e in by_source.values()),
        "image_status": store.status_counts(),
    }


def estimate_human_time(store: Store, labels: dict) -> dict:
    """Human time from the Label Studio corrections ``autolabel.studio`` recorded (its cost model).

    Without recorded corrections the time actually spent is unknown (``seconds`` None); the cost of
    drawing the stored boxes from scratch is still given for scale.
    """
    from autolabel.studio.diff import CostModel
    from autolabel.studio.state import round_summaries

    cost = CostModel()
    from_scratch = labels["images"] * cost.per_image + labels["boxes"] * cost.draw
    rounds = round_summaries(store)
    if not rounds:
        return {
            "seconds": None,
            "seconds_from_scratch": round(from_scratch, 1),
            "images_reviewed": 0,
            "method": (
                "no Label Studio corrections recorded; from scratch = the stored boxes drawn at"
                f" {cost.draw:g} s per box + {cost.per_image:g} s per image (autolabel.studio.diff.CostModel)"
            ),
        }
    return {
        "seconds": round(sum(r["seconds"] for r in rounds), 1),
        "seconds_from_scratch": round(sum(r["seconds_from_scratch"] for r in rounds), 1),
        "images_reviewed": sum(r["images"] for r in rounds),
        "per_round": [
            {k: r[k] for k in ("round", "images", "seconds", "seconds_from_scratch")} for r in rounds
        ],
        "method": "cost model of autolabel.studio.diff over the corrections pulled from Label Studio",
    }


def build_card(
    *,
    run: Run,
    class_names: Sequence[str],
    imgsz: int,
    exports: dict,
    latency: dict | None,
    labels: dict,
    human_time: dict | None,
) -> dict:
    """The card's values; the student's backend (from the run's weights) gives the license and the
    preprocessing line."""
    from autolabel import students

    metrics, params = run.metrics, run.params
    student = students.backend_class(students.backend_of(run.weights_path or ""))
    return {
        "run_id": run.id,
        "round": run.round,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": list(class_names),
        "imgsz": imgsz,
        # a weights path names the user's folders: the card keeps the file name only
        "training": {
            k: Path(str(params[k])).name if k == "model" else params[k] for k in PUBLIC_PARAMS if k in params
        },
        "started_from": run.started_from if params else None,
        "validation_metrics": {k: metrics[k] for k in METRIC_KEYS if k in metrics},
        "labels": labels,
        "human_time": human_time,
        "lineage": {
            "train_hash": run.train_hash or metrics.get("train_hash"),
            "val_hash": run.val_hash or metrics.get("val_hash"),
            "n_train": run.n_train or metrics.get("n_train"),
            "n_val": run.n_val or metrics.get("n_val"),
        },
        "exports": list(exports.values()),
        "latency": latency,
        "student": student.backend,
        "preprocessing": student.preprocessing,
        "license": student.license_note(model=params.get("model"), pretrained=run.origin[1]),
    }


def render_markdown(card: dict) -> str:
    lines = [f"# Model card: autolabel student, run {card['run_id']}", ""]
    lines += [
        f"- Round: {card['round']}",
        f"- Input size: {card['imgsz']} x {card['imgsz']} ({card.get('preprocessing', 'letterboxed')})",
        f"- Classes ({len(card['classes'])}, in output order): "
        + ", ".join(f"{i}: {name}" for i, name in enumerate(card["classes"])),
        f"- Written: {card['created_at']}",
    ]
    if card.get("student"):
        lines.append(f"- Student: {card['student']}")
    if card.get("started_from"):
        lines.append(f"- Started from: {card['started_from']}")
    if card["training"]:
        lines.append("- Training: " + ", ".join(f"{k}={v}" for k, v in card["training"].items()))
    lines += ["", "## Validation metrics", ""]
    metrics = card["validation_metrics"]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append("No validation metrics were recorded for this run.")
    lines += ["", "## Labels and human time", ""]
    labels = card["labels"]
    lines.append(f"- Human-verified images: {labels['images']} ({labels['boxes']} boxes)")
    for source, entry in sorted(labels["by_source"].items()):
        lines.append(f"  - {source}: {entry['images']} images, {entry['boxes']} boxes")
    human = card["human_time"]
    if human:
        if human["seconds"] is None:
            lines.append("- Estimated human time: unknown (no Label Studio corrections recorded)")
        else:
            lines.append(
                f"- Estimated human time: {human['seconds'] / 3600:.2f} h"
                f" for {human['images_reviewed']} images reviewed in Label Studio"
            )
        lines.append(f"- The same boxes drawn from scratch: {human['seconds_from_scratch'] / 3600:.2f} h")
        lines.append(f"- Method: {human['method']}")
    lines += ["", "## Data lineage", ""]
    lineage = card["lineage"]
    lines += [
        f"- Train images: {lineage['n_train']}, list hash `{lineage['train_hash']}`",
        f"- Validation images: {lineage['n_val']}, list hash `{lineage['val_hash']}`",
        "",
        "## Exported files and parity",
        "",
    ]
    if card["exports"]:
        lines += [
            (
                "| file | format | precision | max abs diff | box match @IoU0.9"
                " | mAP50-95 pt / export (diff, pts) | names | passed |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for entry in card["exports"]:
            lines.append(_export_row(entry))
        lines.append("")
        for entry in card["exports"]:
            parity = entry.get("parity")
            if not parity:
                lines.append(f"- {entry['file']}: no labeled images to check parity on")
                continue
            lines.append(f"- {entry['file']}: parity on {parity['images']} {parity['image_source']} images")
            lines += [f"- {entry['file']}: {note}" for note in parity.get("notes", [])]
    else:
        lines.append("Nothing exported yet.")
    lines += ["", "## Latency", ""]
    latency = card["latency"]
    if latency and latency.get("rows"):
        machine = latency["machine"]
        lines += [
            (
                f"Median and p90 of {latency['runs']} timed runs after {latency['warmup']} warm-up runs"
                f" at {latency['imgsz']} px; {machine.get('processor')}, {machine.get('cpu_count')}"
                f" CPUs (CPU threads for PyTorch and ONNX Runtime alike: {latency.get('cpu_threads')}),"
                f" GPU: {machine.get('cuda') or 'none'}."
            ),
            "",
            "| backend | device | file | batch | median ms | p90 ms | speedup vs PyTorch eager |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in latency["rows"]:
            speedup = "" if row.get("speedup") is None else f"{row['speedup']:.2f}x"
            lines.append(
                f"| {row['backend']} | {row['device']} | {row['file']} | {row['batch']}"
                f" | {row['median_ms']:.2f}"
                f" | {row['p90_ms']:.2f} | {speedup} |"
            )
        if latency.get("notes"):
            lines.append("")
            lines += [f"- {note}" for note in latency["notes"]]
    else:
        lines.append("Not measured yet: run `autolabel bench`.")
    lines += ["", "## License", "", card["license"], ""]
    return "\n".join(lines)


def write_card(out_dir: Path, card: dict) -> tuple[Path, Path]:
    md, js = out_dir / CARD_MD, out_dir / CARD_JSON
    md.write_text(render_markdown(card))
    js.write_text(json.dumps(card, indent=2, default=str))
    return md, js


def _export_row(entry: dict) -> str:
    parity = entry.get("parity")
    options = entry["options"]
    precision = "int8" if options.get("int8") else "fp16" if options.get("half") else "fp32"
    if not parity:
        return f"| {entry['file']} | {entry['format']} | {precision} | not checked | | | | |"
    diff = "n/a (NMS in graph)" if parity["max_abs_diff"] is None else f"{parity['max_abs_diff']:.2e}"
    larger = max(parity["boxes_reference"], parity["boxes_exported"])
    match = f"{parity['match_rate']:.3f} ({parity['boxes_matched']}/{larger} at conf {parity['conf']:g})"
    maps = (
        f"{parity['map50_95_reference'] * 100:.2f} / {parity['map50_95_exported'] * 100:.2f}"
        f" ({parity['map_diff_points']:.2f})"
    )
    names = "same" if parity["names_match"] else "DIFFERENT"
    return (
        f"| {entry['file']} | {entry['format']} | {precision} | {diff} | {match} | {maps} | {names} |"
        f" {'yes' if parity['passed'] else 'NO'} |"
    )


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def update_card(store: Store, run: Run, out_dir: Path, *, manifest: dict | None = None) -> Path:
    """(Re)write the card from the store, the export manifest and ``latency.json`` if measured."""
    from autolabel.exported.manifest import read_latency, read_manifest

    manifest = manifest if manifest is not None else read_manifest(out_dir)
    latency = read_latency(out_dir)
    exports = manifest.get("exports", {})
    checked = [e["parity"] for e in exports.values() if e.get("parity")]
    class_names = checked[-1]["names_exported"] if checked else store.class_names()
    sizes = [e["options"]["imgsz"] for e in exports.values()]
    imgsz = sizes[-1] if sizes else (latency or {}).get("imgsz")
    labels = labels_summary(store)
    card = build_card(
        run=run,
        class_names=class_names,
        imgsz=imgsz,
        exports=exports,
        latency=latency,
        labels=labels,
        human_time=estimate_human_time(store, labels),
    )
    md, _ = write_card(out_dir, card)
    return md
