"""``autolabel train`` and ``autolabel eval``: thin shells over autolabel.train / autolabel.evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import StudentOption, WorkspaceOption, console, open_workspace


def train(
    workspace: WorkspaceOption = Path("."),
    student: StudentOption = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Default: train.epochs.")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="Deployment image size.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Weights (.pt path or name in the ultralytics weights dir) or yaml; for D-FINE a "
            "save_pretrained folder, a hub id or a config .json.",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps.")] = None,
    batch: Annotated[int | None, typer.Option("--batch")] = None,
    patience: Annotated[
        int | None, typer.Option("--patience", help="Stop after N epochs without gain.")
    ] = None,
    resume_from: Annotated[
        Path | None, typer.Option("--resume-from", help="Warm start from a previous student's weights.")
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Never download missing official weights (train from scratch instead)."
        ),
    ] = False,
) -> None:
    """Fine-tune the YOLO student on the labeled images; evaluate it on the frozen val set."""
    from autolabel import runs
    from autolabel.evaluate import evaluate_run
    from autolabel.train import TrainSettings, train_student

    ws = open_workspace(workspace)
    out = console()
    settings = TrainSettings.from_config(
        ws.config.train,
        student=student,
        epochs=epochs,
        imgsz=imgsz,
        model=model,
        seed=seed,
        device=device,
        batch=batch,
        patience=patience,
        resume_from=None if resume_from is None else str(resume_from),
        offline=offline or None,
    )
    with ws.open_store() as store:
        out.print(f"training on {store.status_counts().get('labeled', 0)} labeled images ...")
        run_id = train_student(
            ws, store, settings, warn=lambda m: out.print(f"[yellow]warning:[/yellow] {m}")
        )
        if settings.evaluate:
            evaluate_run(ws, store, run_id, conf=settings.conf, iou=settings.iou)
        run = runs.get(store, run_id)
    out.print(f"run {run_id} finished: weights {run.weights_path}")
    if "map50_95" in run.metrics:
        print_metrics(run.metrics, title=f"run {run_id} on the validation set")


def evaluate(
    workspace: WorkspaceOption = Path("."),
    run: Annotated[
        int | None, typer.Option("--run", help="Run id (default: the latest finished run).")
    ] = None,
    conf: Annotated[
        float | None, typer.Option("--conf", min=0.0, max=1.0, help="Operating confidence for P/R/F1.")
    ] = None,
    iou: Annotated[
        float | None, typer.Option("--iou", min=0.0, max=1.0, help="Matching IoU for P/R/F1.")
    ] = None,
) -> None:
    """Score a run's weights on the frozen val images: mAP, AP by size and class, P/R/F1, a picture."""
    from autolabel.evaluate import evaluate_run
    from autolabel.progress import progress_bar

    ws = open_workspace(workspace)
    conf = ws.config.train.conf if conf is None else conf
    iou = ws.config.train.eval_iou if iou is None else iou
    with ws.open_store() as store:
        total = len(store.images(status="validation"))
        with progress_bar("evaluating", total=total) as advance:
            report = evaluate_run(ws, store, run, conf=conf, iou=iou, advance=advance)
    print_metrics(report.metrics, title=f"run {report.run_id} on the validation set")
    out = console()
    out.print(f"metrics: {report.metrics_path}")
    if report.preview_path:
        out.print(f"truth vs predictions: {report.preview_path}")


def print_metrics(metrics: dict, title: str) -> None:
    from rich.table import Table

    out = console()

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    summary = Table(title=title)
    for column in ("mAP50", "mAP50-95", "AP small", "AP medium", "AP large", "precision", "recall", "F1"):
        summary.add_column(column, justify="right")
    summary.add_row(
        *(
            fmt(metrics.get(k))
            for k in ("map50", "map50_95", "ap_small", "ap_medium", "ap_large", "precision", "recall", "f1")
        )
    )
    out.print(summary)
    out.print(
        f"P/R/F1 at conf >= {metrics.get('conf')} and IoU >= {metrics.get('iou')}, "
        f"{metrics.get('n_images')} images, {metrics.get('n_truth')} boxes"
    )

    per_class = Table(title="per class")
    for column in ("class", "AP50-95", "AP50", "precision", "recall", "TP", "FP", "FN"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    counts = metrics.get("per_class", {})
    for name, ap in metrics.get("per_class_ap", {}).items():
        c = counts.get(name, {})
        per_class.add_row(
            name,
            fmt(ap),
            fmt(metrics.get("per_class_ap50", {}).get(name)),
            fmt(c.get("precision")),
            fmt(c.get("recall")),
            str(c.get("tp", "-")),
            str(c.get("fp", "-")),
            str(c.get("fn", "-")),
        )
    out.print(per_class)

    matrix = metrics.get("confusion_matrix")
    labels = metrics.get("confusion_labels")
    if matrix and labels:
        table = Table(title="confusion (rows: truth, columns: predicted)")
        table.add_column("")
        for label in labels:
            table.add_column(label, justify="right")
        for label, row in zip(labels, matrix):
            table.add_row(label, *(str(v) for v in row))
        out.print(table)
    from autolabel.runs import trainer_metrics

    own = trainer_metrics(metrics)
    if own.get("map50") is not None or own.get("map50_95") is not None:
        out.print(
            f"{own['backend']}'s own val during training: mAP50 {fmt(own.get('map50'))}, "
            f"mAP50-95 {fmt(own.get('map50_95'))}"
        )
    elif own.get("val_loss") is not None:
        out.print(
            f"{own['backend']}'s own val during training: loss {own['val_loss']:.4f} "
            f"(best epoch {own.get('best_epoch')})"
        )
