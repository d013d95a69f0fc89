from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import WorkspaceOption, console, open_workspace


def report(
    workspace: WorkspaceOption = Path("."),
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the page (default <workspace>/report.html)."),
    ] = None,
) -> None:
    """One self-contained HTML page (opens from disk, can be mailed): rounds, quality, mistakes, leaks."""
    from autolabel.report import write_report

    ws = open_workspace(workspace)
    with ws.open_store() as store:
        summary = write_report(ws, store, out)
    console().print(
        f"report: {summary.path} ({summary.rounds} rounds, {summary.gallery} val images in the gallery,"
        f" {summary.corrections} correction examples)"
    )
