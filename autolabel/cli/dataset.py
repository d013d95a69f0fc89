"""Dataset commands: synth, import, split, check labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import ErrorHandlingGroup, WorkspaceOption, console, open_workspace


def synth(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (YOLO layout: images/, labels/, data.yaml).")
    ],
    n: Annotated[int, typer.Option("--n", min=0, help="Number of images.")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed, same images and labels.")] = 0,
    imgsz: Annotated[int, typer.Option(min=16, help="Image side in pixels.")] = 320,
    groups: Annotated[int, typer.Option(min=1, help="Capture sessions (one folder each).")] = 10,
    difficulty: Annotated[
        str,
        typer.Option(help="normal | easy (large objects, no clutter or occluders: learnable from scratch)"),
    ] = "normal",
) -> None:
    """Write synthetic fastener scenes (bolt, nut, washer, screw) with exact boxes."""
    from autolabel.errors import AutolabelError
    from autolabel.progress import progress_bar
    from autolabel.synthetic import DIFFICULTY, generate_dataset

    if difficulty not in DIFFICULTY:
        raise AutolabelError(f"--difficulty must be one of {', '.join(DIFFICULTY)}, not {difficulty!r}")
    with progress_bar("drawing", total=n) as advance:
        summary = generate_dataset(
            out, n=n, seed=seed, imgsz=imgsz, groups=groups, advance=advance, **DIFFICULTY[difficulty]
        )
    counts = ", ".join(f"{k} {v}" for k, v in summary.per_class.items())
    console().print(
        f"{summary.images} images, {summary.boxes} boxes ({counts}) in {summary.groups} groups -> {out}"
    )


def import_labels(
    labels: Annotated[
        Path, typer.Option("--labels", "-l", help="YOLO labels folder, or COCO .json (or a folder with one).")
    ],
    format: Annotated[str, typer.Option("--format", "-f", help="yolo | coco")],
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            "-i",
            help="Where the labeled images are: the workspace image folder (default) or a folder inside it.",
        ),
    ] = None,
    add_classes: Annotated[
        bool, typer.Option("--add-classes", help="Add class names that are not in the ontology.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite labels already pulled from Label Studio.")
    ] = False,
    class_names: Annotated[
        str | None,
        typer.Option(
            "--names",
            help="YOLO class names in index order, 'a,b,c' (default: data.yaml or classes.txt"
            " in the labels folder or its parent).",
        ),
    ] = None,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Import existing YOLO or COCO labels as human-verified labels."""
    from autolabel.importer import import_labels as run_import
    from autolabel.ontology import Ontology

    ws = open_workspace(workspace)
    ontology_path = ws.ontology_path()
    names = Ontology.load(ontology_path).names if ontology_path else None
    with ws.open_store() as store:
        summary = run_import(
            store,
            ws.image_root,
            ws.config.grouping,
            labels,
            format.lower(),
            images_dir=images,
            add_classes=add_classes,
            ontology_names=names,
            replace=replace,
            names=_names_list(class_names),
        )
    out = console()
    out.print(
        f"imported {summary.boxes} boxes on {summary.labeled} images ({summary.registered} newly registered)"
    )
    if summary.added_classes:
        out.print(f"added classes: {', '.join(summary.added_classes)}")
    if summary.clipped_boxes or summary.dropped_boxes:
        out.print(
            f"{summary.clipped_boxes} boxes reached beyond the image and were clipped;"
            f" {summary.dropped_boxes} empty boxes dropped"
        )
    if summary.orphans:
        shown = ", ".join(summary.orphans[:5]) + (" ..." if len(summary.orphans) > 5 else "")
        out.print(
            f"[yellow]{len(summary.orphans)} labels have no image under the images folder:[/yellow] {shown}"
        )
    for path, reason in summary.skipped[:20]:
        out.print(f"  skipped {path}: {reason}")
    if len(summary.skipped) > 20:
        out.print(f"  ... and {len(summary.skipped) - 20} more skipped")


def _names_list(text: str | None) -> list[str] | None:
    from autolabel.errors import AutolabelError

    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise AutolabelError(f"--names must be distinct, non-empty names separated by commas: {text!r}")
    return names


def split(
    val_fraction: Annotated[
        float,
        typer.Option("--val-fraction", min=0.0, max=1.0, help="First split only: share of images in val."),
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Order in which whole groups are drawn for val.")] = 0,
    grow_val: Annotated[
        int, typer.Option("--grow-val", min=0, help="Add about N images (new whole groups) to val.")
    ] = 0,
    groups_csv: Annotated[
        Path | None,
        typer.Option("--groups-csv", help="CSV 'path,group': images sharing a group never straddle splits."),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report", help="List group sizes and near-duplicate pairs across splits.")
    ] = False,
    near_dup_threshold: Annotated[
        float | None,
        typer.Option(
            "--near-dup-threshold",
            min=0.0,
            help="Cosine similarity from which two images are near-duplicates (default 0.95).",
        ),
    ] = None,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Group-aware train/val split; val is frozen once created and only grows on request."""
    from autolabel import dataset
    from autolabel.progress import progress_bar
    from autolabel.registry import recorded_grouping

    ws = open_workspace(workspace)
    out = console()
    with ws.open_store() as store:
        grouping = recorded_grouping(store)
        if grouping is not None:
            out.print(grouping.describe())
        if groups_csv is not None:
            count = dataset.set_explicit_groups(store, dataset.load_groups_csv(groups_csv))
            out.print(f"{count} explicit groups recorded from {groups_csv}")
        with progress_bar("embedding", total=None) as advance:
            result = dataset.split(
                store,
                ws.image_root,
                val_fraction=val_fraction,
                seed=seed,
                grow_val=grow_val,
                threshold=near_dup_threshold,
                advance=advance,
            )
        out.print(
            f"train {result.n_train} images, val {result.n_val} images ({result.groups} groups);"
            f" this run added {result.added_train} to train, {result.added_val} to val;"
            f" {result.near_duplicate_pairs} near-duplicate pairs merged"
        )
        for note in result.notes:
            out.print(f"[yellow]{note}[/yellow]")
        if report:
            _print_report(dataset.split_report(store, ws.image_root, threshold=near_dup_threshold))


def _print_report(report) -> None:
    from rich.table import Table

    out = console()
    table = Table(title="groups")
    for column in ("group", "split", "images"):
        table.add_column(column)
    for name, where, size in report.groups[:50]:
        table.add_row(name, where, str(size))
    out.print(table)
    if len(report.groups) > 50:
        out.print(f"... and {len(report.groups) - 50} smaller groups")
    leaks = len(report.leaks) + len(report.straddling)
    colour = "red" if leaks else "green"
    out.print(
        f"[{colour}]leaks: {len(report.leaks)} near-duplicate pairs across train/val,"
        f" {len(report.straddling)} groups in both splits[/{colour}]"
    )
    if report.leaks:
        table = Table(title="near-duplicates across splits")
        for column in ("image", "split", "near-duplicate", "split", "cosine"):
            table.add_column(column)
        for a, sa, b, sb, score in report.leaks[:100]:
            table.add_row(a, sa, b, sb, f"{score:.3f}")
        out.print(table)
    for name, n_train, n_val in report.straddling:
        out.print(f"  group {name}: {n_train} train, {n_val} val")
    if report.unsplit:
        out.print(f"{report.unsplit} labeled images not split yet")


check_app = typer.Typer(
    cls=ErrorHandlingGroup, no_args_is_help=True, help="Look at data before training on it."
)


@check_app.command("labels")
def check_labels(
    n: Annotated[int, typer.Option("--n", min=1, help="Images in the picture (flagged ones first).")] = 16,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG grid of images with their boxes.")] = Path(
        "check.png"
    ),
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Check a YOLO labels folder instead of the workspace labels."),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="With --labels: the images (default: the sibling 'images' folder)."),
    ] = None,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Draw labels as training loads them and flag bad class ids, boxes and shifted formats.

    Exits with code 1 when anything is flagged.
    """
    from rich.table import Table

    from autolabel import check
    from autolabel.errors import AutolabelError

    if labels is not None:
        from autolabel.importer import yolo_class_names

        if not labels.is_dir():
            raise_error(f"--labels must be a folder of YOLO .txt files: {labels}")
        images = images or labels.parent / "images"
        if not images.is_dir():
            raise_error(f"images folder not found: {images} (give --images)")
        try:
            names = yolo_class_names(labels)
        except AutolabelError as exc:  # no names: still check geometry and shifts
            console().print(f"[yellow]{exc}; class ids are not checked[/yellow]")
            names = None
        items = check.items_from_yolo(labels, images)
    else:
        ws = open_workspace(workspace)
        with ws.open_store() as store:
            names = store.class_names()
            items = check.items_from_store(store, ws.image_root)
    if not items:
        raise_error("no labeled images to check")
    result = check.check_labels(items, names, n=n, out=out)
    console_out = console()
    console_out.print(f"checked {result.images} images, {result.boxes} boxes -> {result.grid}")
    if result.findings:
        table = Table(title=f"{len(result.flagged_images)} images flagged")
        for column in ("image", "problem", "detail"):
            table.add_column(column, overflow="fold")
        for finding in result.findings[:200]:
            table.add_row(finding.image, finding.problem, finding.detail)
        console_out.print(table)
        if len(result.findings) > 200:
            console_out.print(f"... and {len(result.findings) - 200} more findings")
    for note in result.notes:
        console_out.print(f"[red]{note}[/red]")
    if result.findings or result.notes:
        raise typer.Exit(code=1)
    console_out.print("[green]no problems found[/green]")


def raise_error(message: str):
    from autolabel.errors import AutolabelError

    raise AutolabelError(message)
