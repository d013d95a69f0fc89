"""``autolabel report``: what the workspace has learned, as one self-contained HTML page.

The page needs nothing but itself: plots and pictures are inlined as base64 PNG/JPEG, the CSS is
inline, there is no script and no link to a server or CDN, so it opens from disk and can be mailed.
This module gathers the sections as plain data (``collect``); ``report_html`` renders them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel import detections as dets
from autolabel import runs
from autolabel.errors import AutolabelError
from autolabel.status import plot_rounds, status_report
from autolabel.store import Store
from autolabel.workspace import Workspace

REPORT_NAME = "report.html"
GALLERY_SIZE = 6
CORRECTION_EXAMPLES = 4


@dataclass(frozen=True)
class ReportSummary:
    path: Path
    rounds: int
    gallery: int
    corrections: int


def write_report(workspace: Workspace, store: Store, out_path: Path | None = None) -> ReportSummary:
    """Collect every section and write the page (default ``<workspace>/report.html``)."""
    from autolabel.report_html import render

    out_path = Path(out_path) if out_path else workspace.root / REPORT_NAME
    data = collect(workspace, store)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render(data), encoding="utf-8")
    return ReportSummary(
        path=out_path,
        rounds=len(data["rounds"]),
        gallery=len(data["gallery"]),
        corrections=len(data["corrections"]),
    )


def collect(workspace: Workspace, store: Store) -> dict:
    """The page's sections as data; images are ``data:`` URIs."""
    report = status_report(store)
    run = runs.latest_finished(store)
    metrics = run.metrics if run is not None else {}
    class_names = store.class_names()
    return {
        "workspace": str(workspace.root),
        "status": report,
        "rounds": report["rounds"],
        "rounds_plot": _rounds_plot(report["rounds"]),
        "run": None if run is None else {"id": run.id, "round": run.round, "n_train": run.n_train},
        "metrics": {k: v for k, v in metrics.items() if k != "preview"},
        "per_class_plot": _per_class_plot(metrics),
        "confusion_plot": _confusion_plot(metrics),
        "gallery": _gallery(workspace, store, run, class_names, metrics.get("conf", 0.25)),
        "corrections": _corrections(workspace, store, class_names),
        "split": _split_summary(workspace, store),
    }


# -- figures ----------------------------------------------------------------------------------------


def data_uri(image: np.ndarray | bytes, fmt: str = "JPEG") -> str:
    """An RGB array (or encoded PNG bytes) as a ``data:`` URI the page embeds."""
    if isinstance(image, bytes):
        return "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, quality=85)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rounds_plot(table: list[dict]) -> str | None:
    if not table:
        return None
    buffer = io.BytesIO()
    plot_rounds(table, buffer)
    return data_uri(buffer.getvalue())


def _per_class_plot(metrics: dict) -> str | None:
    per_class = metrics.get("per_class_ap") or {}
    sizes = {k: metrics.get(f"ap_{k}") for k in ("small", "medium", "large")}
    if not per_class and not any(v is not None for v in sizes.values()):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, values, title in ((axes[0], per_class, "AP50-95 per class"), (axes[1], sizes, "AP by box size")):
        names = list(values)
        heights = [values[n] if values[n] is not None else 0.0 for n in names]
        bars = ax.bar(names, heights, color="#4c78a8")
        for bar, name in zip(bars, names):
            text = "n/a" if values[name] is None else f"{values[name]:.2f}"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), text, ha="center", va="bottom")
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    return data_uri(_figure_png(fig))


def _confusion_plot(metrics: dict) -> str | None:
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("confusion_labels")
    if not matrix or not labels:
        return None
    plt = _pyplot()
    values = np.asarray(matrix)
    side = 2.5 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    top = values.max() or 1
    for (row, col), count in np.ndenumerate(values):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    ax.set_title(f"confusion at conf >= {metrics.get('conf', 0.25):g}")
    return data_uri(_figure_png(fig))


def _pair(image: np.ndarray, left, right, class_names: Sequence[str]) -> tuple[str, str]:
    from autolabel.preview import annotate

    return data_uri(annotate(image, left, class_names)), data_uri(annotate(image, right, class_names))


# -- pictures ---------------------------------------------------------------------------------------


def _gallery(workspace: Workspace, store: Store, run, class_names, conf: float) -> list[dict]:
    """The frozen-val images the current student gets most wrong (false positives + misses)."""
    if run is None or not run.weights_path or not Path(run.weights_path).is_file():
        return []
    from autolabel.evaluate import MAP_CONF, MAP_MAX_DET, match_image
    from autolabel.images import ImageDecodeError, decode
    from autolabel.proposers.student import StudentProposer

    labels = store.labels()
    val = [im for im in store.images(status="validation") if im.id in labels]
    if not val:
        return []
    student = StudentProposer(
        run.weights_path,
        conf=MAP_CONF,
        max_det=MAP_MAX_DET,
        imgsz=int(run.params.get("imgsz", 640)),
        device="auto",
    )
    scored = []
    for image in val:
        try:
            pixels = decode(workspace.image_root / image.path).pixels
        except ImageDecodeError:
            continue
        pred = student.predict([pixels])[0]
        if len(pred) and pred.confidence is not None:
            pred = pred[pred.confidence >= conf]
        truth = dets.from_json(labels[image.id])
        assigned, taken = match_image(truth, pred, 0.5)
        false_pos, missed = int((assigned < 0).sum()), int((~taken).sum())
        scored.append((false_pos + missed, false_pos, missed, image, pixels, truth, pred))
    scored.sort(key=lambda item: (-item[0], item[3].path))
    gallery = []
    for errors, false_pos, missed, image, pixels, truth, pred in scored[:GALLERY_SIZE]:
        truth_uri, pred_uri = _pair(pixels, truth, pred, class_names)
        gallery.append(
            {
                "path": image.path,
                "errors": errors,
                "false_positives": false_pos,
                "missed": missed,
                "truth": truth_uri,
                "predicted": pred_uri,
            }
        )
    return gallery


def _corrections(workspace: Workspace, store: Store, class_names) -> list[dict]:
    """Pre-labels shown in Label Studio next to what the human made of them (most edited first)."""
    from autolabel.images import ImageDecodeError, decode
    from autolabel.studio.state import correction_examples

    examples = correction_examples(store, limit=CORRECTION_EXAMPLES)
    if not examples:
        return []
    labels = store.labels()
    paths = {im.id: im.path for im in store.images(ids=[e[0] for e in examples])}
    out = []
    for image_id, round_index, shown_json, *changes in examples:
        path = paths.get(image_id)
        if path is None or image_id not in labels:
            continue
        try:
            pixels = decode(workspace.image_root / path).pixels
        except ImageDecodeError:
            continue
        shown = dets.from_json(shown_json) if shown_json else dets.empty()
        shown_uri, human_uri = _pair(pixels, shown, dets.from_json(labels[image_id]), class_names)
        out.append(
            {
                "path": path,
                "round": round_index,
                "changes": dict(zip(("kept", "moved", "relabeled", "deleted", "added"), changes)),
                "shown": shown_uri,
                "human": human_uri,
            }
        )
    return out


def _split_summary(workspace: Workspace, store: Store) -> dict | None:
    from autolabel import dataset

    try:
        report = dataset.split_report(store, workspace.image_root)
    except AutolabelError:
        return None
    sizes: dict[str, list[int]] = {}
    for _, split, count in report.groups:
        sizes.setdefault(split, []).append(count)
    return {
        "groups": {split: {"groups": len(c), "images": sum(c)} for split, c in sorted(sizes.items())},
        "straddling": [list(s) for s in report.straddling],
        "leaks": [list(leak) for leak in report.leaks[:20]],
        "n_leaks": len(report.leaks),
        "unsplit": report.unsplit,
    }
