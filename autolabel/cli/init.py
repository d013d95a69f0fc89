from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import WorkspaceOption, configure_process, console


def init(
    images: Annotated[Path, typer.Option("--images", "-i", help="Folder of images (searched recursively).")],
    workspace: WorkspaceOption = Path("."),
    ontology: Annotated[
        Path | None, typer.Option("--ontology", help="Prompt ontology YAML (e.g. prompts/fasteners.yaml).")
    ] = None,
    group_by: Annotated[
        str, typer.Option("--group-by", help="Source groups: auto | folder | regex | exif_gap.")
    ] = "auto",
    group_regex: Annotated[
        str | None,
        typer.Option("--group-regex", help="With --group-by regex: first capture group names the group."),
    ] = None,
    gap_seconds: Annotated[float, typer.Option("--gap-seconds", help="With --group-by exif_gap.")] = 60.0,
) -> None:
    """Create (or refresh) a workspace: autolabel.yaml + SQLite state; register new images."""
    from autolabel.config import CONFIG_NAME, GroupingConfig, WorkspaceConfig
    from autolabel.errors import AutolabelError
    from autolabel.ontology import Ontology
    from autolabel.workspace import Workspace

    root = workspace.resolve()
    if not images.exists():
        raise AutolabelError(f"images folder not found: {images}")
    if not images.is_dir():
        raise AutolabelError(f"not a folder: {images}")
    if ontology is not None:
        Ontology.load(ontology)  # validate before writing anything
    if (root / CONFIG_NAME).is_file():
        ws = Workspace.load(root)
        if ontology is not None:  # a later 'init --ontology' gives the workspace its classes
            given = _relative_or_absolute(ontology, root)
            ws = Workspace(root=ws.root, config=ws.config.model_copy(update={"ontology": given}))
            ws.save()
    else:
        try:
            grouping = GroupingConfig(mode=group_by, regex=group_regex, gap_seconds=gap_seconds)
        except ValueError as exc:
            raise AutolabelError(f"--group-by: {str(exc).splitlines()[-1].strip()}") from None
        config = WorkspaceConfig(
            images=_relative_or_absolute(images, root),
            ontology=None if ontology is None else _relative_or_absolute(ontology, root),
            grouping=grouping,
        )
        ws = Workspace.create(root, config)
    configure_process(ws)
    summary = register_with_progress(ws)
    out = console()
    out.print(f"workspace {ws.root}: {summary.found} images found, {summary.new} new")
    if summary.grouping is not None:
        out.print(summary.grouping.describe())
    print_scan_problems(summary)


def register_with_progress(ws):
    from autolabel.progress import progress_bar
    from autolabel.registry import register_images

    with ws.open_store() as store, progress_bar("registering", total=None) as advance:
        return register_images(
            store, ws.image_root, ws.config.grouping, advance=advance, on_total=advance.set_total
        )


def print_scan_problems(summary) -> None:
    out = console()
    if summary.notes:
        out.print(f"{len(summary.notes)} images converted while decoding:")
        for path, note in summary.notes[:20]:
            out.print(f"  {path}: {note}")
        if len(summary.notes) > 20:
            out.print(f"  ... and {len(summary.notes) - 20} more")
    if summary.errors:
        out.print(f"[yellow]{len(summary.errors)} files skipped:[/yellow]")
        for path, reason in summary.errors:
            out.print(f"  {path}: {reason}")


def _relative_or_absolute(path: Path, root: Path) -> str:
    path = path.resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
