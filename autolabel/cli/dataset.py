"""Dataset commands: synth, import, split, check labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from autolabel.cli.common import ErrorHandlingGroup, WorkspaceOption, console, open_workspace


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (YOLO layout: images/, labels/, data.yaml).")],
    n: Annotated[int, typer.Option("--n", min=0, help="Number of images.")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed, same images and labels.")] = 0,
    imgsz: Annotated[int, typer.Option(min=16, help="Image side in pixels.")] = 320,
    groups: Annotated[int, typer.Option(min=1, help="Capture sessions (one folder each).")] = 10,
) -> None:
    """Write synthetic fastener scenes (bolt, nut, washer, screw) with exact boxes."""
    from autolabel.progress import progress_bar
    from autolabel.synthetic import generate_dataset

    with progress_bar("drawing", total=n) as advance:
        summary = generate_dataset(out, n=n, seed=seed, imgsz=imgsz, groups=groups, advance=advance)
    counts = ", ".join(f"{k} {v}" for k, v in summary.per_class.items())
    console().print(f"{summary.images} images, {summary.boxes} boxes ({counts}) in {summary.groups} groups -> {out}")
