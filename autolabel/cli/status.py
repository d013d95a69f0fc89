from __future__ import annotations

from pathlib import Path

from autolabel.cli.common import WorkspaceOption, console, open_workspace


def status(workspace: WorkspaceOption = Path(".")) -> None:
    """Where the workspace stands: images by status, pre-labels, human labels, training runs."""
    from rich.table import Table

    from autolabel.status import collect_status, plot_rounds, round_table

    ws = open_workspace(workspace)
    out = console()
    with ws.open_store() as store:
        report = collect_status(store)
    out.print(f"workspace {ws.root} (images: {ws.image_root})")
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
            proposals.add_column(column, justify="right" if column != "model" else "left")
        for row in report["proposals"]:
            proposals.add_row(row["model_version"], str(row["images"]), str(row["boxes"]), str(row["errors"]))
        out.print(proposals)
    out.print(f"human-verified images: {report['labeled_images']} ({report['labeled_boxes']} boxes)")
    with ws.open_store() as store:
        rounds = round_table(store)
    if rounds:
        table = Table(title="active-learning rounds")
        columns = ("round", "labels", "human time", "proposer P", "proposer R", "mAP50", "mAP50-95", "F1")
        for column in columns:
            table.add_column(column, justify="right")
        for r in rounds:
            table.add_row(
                str(r["round"]), str(r["labels"]), f"{r['human_seconds'] / 60:.1f} min",
                _fmt(r["proposer_precision"]), _fmt(r["proposer_recall"]),
                _fmt(r["map50"]), _fmt(r["map50_95"]), _fmt(r["f1"]),
            )
        out.print(table)
        plot = ws.root / "previews" / "map_vs_labels.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_rounds(rounds, plot)
        out.print(f"plot: {plot}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
