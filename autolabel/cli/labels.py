"""``autolabel export-labels`` and ``autolabel preview``: labels out of the workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import WorkspaceOption, console, open_workspace

StatusOption = Annotated[
    str | None,
    typer.Option(
        "--status",
        help="Comma-separated image statuses (unlabeled, proposed, in_review, labeled, validation);"
        " default: all.",
    ),
]
SourceOption = Annotated[
    str,
    typer.Option("--source", help="auto (human labels, else newest pre-labels) | labels | predictions."),
]


def export_labels(
    fmt: Annotated[str, typer.Option("--format", "-f", help="yolo | coco.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    status: StatusOption = None,
    source: SourceOption = "auto",
    with_scores: Annotated[
        bool, typer.Option("--with-scores", help="YOLO: append each pre-label's score as a 6th column.")
    ] = False,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Write labels as a YOLO dataset (images/, labels/, data.yaml) or COCO annotations.json."""
    from autolabel.labels_export import export_labels as run_export
    from autolabel.labels_export import parse_statuses

    ws = open_workspace(workspace)
    summary = run_export(ws, fmt.lower(), out, parse_statuses(status), source, with_scores)
    out_console = console()
    out_console.print(
        f"exported {summary.images} images, {summary.boxes} boxes ({summary.from_labels} from labels, "
        f"{summary.from_predictions} from pre-labels) as {fmt.lower()} to {summary.out_dir}"
    )
    if summary.without_boxes_source:
        out_console.print(
            f"{summary.without_boxes_source} selected images have no boxes from '{source}' and were left out"
        )


def preview(
    n: Annotated[int, typer.Option("--n", help="Number of images in the grid.")] = 16,
    status: StatusOption = None,
    source: SourceOption = "auto",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="PNG to write (default: preview.png in the workspace)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Which images are drawn.")] = 0,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Write a grid PNG of images with their boxes, class and score."""
    from autolabel.labels_export import parse_statuses, write_preview

    ws = open_workspace(workspace)
    summary = write_preview(
        ws, out if out is not None else ws.root / "preview.png", n, parse_statuses(status), source, seed
    )
    for path, reason in summary.unreadable:
        console().print(f"skipped {path}: {reason}")
    typer.echo(str(summary.path))
