"""``autolabel export`` (exported file + parity + model card) and ``autolabel bench`` (latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import WorkspaceOption, console, open_workspace


def export(
    format: Annotated[
        str, typer.Option("--format", "-f", help="onnx | engine (TensorRT) | openvino.")
    ] = "onnx",
    run: Annotated[
        int | None, typer.Option("--run", help="Run id to export (default: best mAP50-95).")
    ] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch and image size.")] = False,
    half: Annotated[bool, typer.Option("--half", help="FP16 weights.")] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Static INT8 (onnx, engine), calibrated on the training images.")
    ] = False,
    nms: Annotated[bool, typer.Option("--nms", help="Put NMS inside the exported graph.")] = False,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Input size (default: the run's).")] = None,
    conf: Annotated[
        float | None,
        typer.Option("--conf", help="Box threshold for the box-level parity (default: the run's)."),
    ] = None,
    parity_limit: Annotated[
        int | None, typer.Option("--parity-limit", help="Check parity on at most this many images.")
    ] = None,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Export the best (or a named) round's student, check it against PyTorch, write the model card."""
    from autolabel import runs
    from autolabel.export import export_student
    from autolabel.exported.options import ExportOptions, check_exporter

    check_exporter(format)  # before loading anything: TensorRT without CUDA is one line
    ws = open_workspace(workspace)
    with ws.open_store() as store:
        chosen = runs.select(store, run)
        options = ExportOptions(
            format=format,
            imgsz=imgsz or chosen.imgsz(ws.config.train.imgsz),
            dynamic=dynamic,
            half=half,
            int8=int8,
            nms=nms,
        )
        result = export_student(
            store,
            workspace_root=ws.root,
            image_root=ws.image_root,
            exports_root=ws.exports_dir,
            options=options,
            run_id=chosen.id,
            conf=conf,
            parity_limit=parity_limit,
        )
    print_export(result)


def print_export(result) -> None:
    from rich.table import Table

    out = console()
    out.print(f"run {result.run_id}: exported {result.exported}")
    parity = result.parity
    if parity is None:
        out.print("[yellow]no labeled images: parity not checked[/yellow]")
    else:
        table = Table(title=f"parity on {parity.images} {parity.image_source} images")
        table.add_column("check")
        table.add_column("result")
        diff = "n/a (NMS in graph)" if parity.max_abs_diff is None else f"{parity.max_abs_diff:.3g}"
        table.add_row("max abs diff, raw outputs", diff)
        for name, value in parity.raw_diffs.items():
            table.add_row(f"max abs diff, {name}", f"{value:.3g}")
        larger = max(parity.boxes_reference, parity.boxes_exported)
        table.add_row(
            f"boxes matched at IoU {parity.match_iou} (conf {parity.conf:g})",
            f"{parity.match_rate:.3f} ({parity.boxes_matched}/{larger})",
        )
        tolerance = (
            "" if parity.map_tolerance_points is None else f" (target <= {parity.map_tolerance_points})"
        )
        table.add_row(
            "mAP50-95 PyTorch / export",
            f"{parity.map50_95_reference * 100:.2f} / {parity.map50_95_exported * 100:.2f}"
            f", diff {parity.map_diff_points:.2f} points{tolerance}",
        )
        table.add_row(
            "class names", "same order" if parity.names_match else f"DIFFERENT: {parity.names_exported}"
        )
        out.print(table)
        for note in parity.notes:
            out.print(f"note: {note}")
    out.print(f"model card: {result.card}")
    if parity is not None and not parity.passed:
        out.print("[red]parity check failed: the exported model does not match the PyTorch model[/red]")
        raise typer.Exit(code=1)


def bench(
    run: Annotated[int | None, typer.Option("--run", help="Run id (default: best mAP50-95).")] = None,
    batch: Annotated[list[int], typer.Option("--batch", help="Batch size; repeat for several.")] = [1],  # noqa: B006
    runs: Annotated[
        int, typer.Option("--runs", min=1, help="Timed runs per backend (>= 50 for reporting).")
    ] = 50,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed warm-up runs.")] = 10,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Input size (default: the export's).")] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help="CPU threads for PyTorch and ONNX Runtime alike (default: PyTorch's)."
        ),
    ] = None,
    workspace: WorkspaceOption = Path("."),
) -> None:
    """Latency of PyTorch eager vs the exported files (ONNX Runtime, TensorRT on a GPU): median and p90."""
    from autolabel.export import export_dir
    from autolabel.exported.manifest import LATENCY_JSON
    from autolabel.latency import bench_exports
    from autolabel.model_card import update_card
    from autolabel.runs import select as select_run  # ``runs`` is the --runs count here
    from autolabel.runtime import configure_ultralytics

    ws = open_workspace(workspace)
    with ws.open_store() as store:
        chosen = select_run(store, run)
        out_dir = export_dir(ws.exports_dir, chosen.id)
        configure_ultralytics()
        result = bench_exports(out_dir, imgsz=imgsz, batches=batch, runs=runs, warmup=warmup, threads=threads)
        card = update_card(store, chosen, out_dir)
    print_latency(result)
    out = console()
    out.print(f"latency: {out_dir / LATENCY_JSON}")
    out.print(f"model card: {card}")


def print_latency(result: dict) -> None:
    from rich.table import Table

    table = Table(
        title=f"latency at {result['imgsz']} px: {result['runs']} runs after {result['warmup']} warm-up,"
        f" CPU threads: {result['cpu_threads']}"
    )
    for column in ("backend", "device", "file", "batch", "median ms", "p90 ms", "speedup"):
        table.add_column(column, justify="right" if column.endswith(("ms", "batch", "speedup")) else "left")
    for row in result["rows"]:
        speedup = "" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        table.add_row(
            row["backend"],
            row["device"],
            row["file"] or "",
            str(row["batch"]),
            f"{row['median_ms']:.2f}",
            f"{row['p90_ms']:.2f}",
            speedup,
        )
    out = console()
    out.print(table)
    for note in result["notes"]:
        out.print(f"note: {note}")
