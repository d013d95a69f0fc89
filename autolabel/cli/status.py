from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import WorkspaceOption, console, open_workspace


def status(
    workspace: WorkspaceOption = Path("."),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print everything as one JSON object (no plot, no tables).")
    ] = False,
) -> None:
    """Where the workspace stands: images by status, pre-labels, human labels, training runs, rounds."""
    from autolabel.status import plot_rounds, status_report

    ws = open_workspace(workspace)
    with ws.open_store() as store:
        report = status_report(store)
    if as_json:
        import json

        typer.echo(
            json.dumps({"workspace": str(ws.root), "image_root": str(ws.image_root), **report}, indent=2)
        )
        return
    out = console()
    out.print(f"workspace {ws.root} (images: {ws.image_root})")
    _print_tables(out, report)
    if report["rounds"]:
        plot = ws.root / "previews" / "map_vs_labels.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_rounds(report["rounds"], plot)
        out.print(f"plot: {plot}")


def _print_tables(out, report: dict) -> None:
    from rich.table import Table

    table = Table(title="images")
    table.add_column("status")
    table.add_column("count", justify="right")
    for name, count in report["images"].items():
        table.add_row(name, str(count))
    out.print(table)
    if report["classes"]:
        out.print("classes: " + ", ".join(f"{i}:{n}" for i, n in enumerate(report["classes"])))
    if report["proposals"]:
        proposals = Table(title="pre-labels")
        for column in ("model", "images", "boxes", "errors"):
            proposals.add_column(column, justify="right" if column != "model" else "left", overflow="fold")
        for row in report["proposals"]:
            proposals.add_row(row["model_version"], str(row["images"]), str(row["boxes"]), str(row["errors"]))
        out.print(proposals)
    out.print(f"human-verified images: {report['labeled_images']} ({report['labeled_boxes']} boxes)")
    if report.get("quarantined"):
        out.print(
            f"[yellow]{len(report['quarantined'])} Label Studio annotations held back"
            " (fix or delete them there, then pull):[/yellow]"
        )
        for q in report["quarantined"][:10]:
            out.print(f"  {q['path']} (task {q['task_id']}): {q['reason']}")
    if report["runs"]:
        runs = Table(title="training runs (metrics on the frozen validation set)")
        for column in ("run", "round", "status", "train", "val", "started from", "mAP50", "mAP50-95", "F1"):
            runs.add_column(
                column, justify="left" if column in ("status", "started from") else "right", overflow="fold"
            )
        for r in report["runs"]:
            origin = r["started_from"] + (", warm start" if r["warm_start"] else "")
            runs.add_row(
                str(r["id"]),
                str(r["round"]),
                r["status"],
                str(r["n_train"]),
                str(r["n_val"]),
                origin,
                _fmt(r["map50"]),
                _fmt(r["map50_95"]),
                _fmt(r["f1"]),
            )
        out.print(runs)
    if report["rounds"]:
        table = Table(title="active-learning rounds (frozen-val metrics)")
        for column in ("round", "labels", "boxes", "human time", "mAP50", "mAP50-95", "F1"):
            table.add_column(column, justify="right", overflow="fold")
        for r in report["rounds"]:
            table.add_row(
                str(r["round"]),
                str(r["labels"]),
                str(r["boxes"]),
                f"{r['human_seconds'] / 60:.1f} min",
                _fmt(r["map50"]),
                _fmt(r["map50_95"]),
                _fmt(r["f1"]),
            )
        out.print(table)
        prelabels = Table(title="pre-labels by round (correction time vs drawing every box)")
        for column in ("round", "correct / scratch", "P", "R", "thresholds"):
            prelabels.add_column(
                column, justify="left" if column == "thresholds" else "right", overflow="fold"
            )
        for r in report["rounds"]:
            prelabels.add_row(
                str(r["round"]),
                _ratio(r["round_seconds"], r["round_seconds_from_scratch"]),
                _fmt(r["proposer_precision"]),
                _fmt(r["proposer_recall"]),
                _thresholds(r["thresholds"]),
            )
        out.print(prelabels)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(seconds, scratch) -> str:
    if seconds is None or not scratch:
        return "-"
    return f"{seconds / 60:.1f} / {scratch / 60:.1f} min ({seconds / scratch:.2f}x)"


def _thresholds(thresholds: dict | None) -> str:
    if not thresholds:
        return "-"
    return " ".join(f"{name} {t:.2f}" for name, t in thresholds.items())
