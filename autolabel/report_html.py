"""The report page from ``report.collect``'s data: pure string building, escaped, no scripts."""

from __future__ import annotations

from html import escape

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f4f4f6; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .pair { display: flex; gap: .5em; flex-wrap: wrap; margin: .4em 0 1.2em; }
.pair figure { margin: 0; flex: 1 1 300px; } .pair img { width: 100%; max-width: 480px; } figcaption { color: #555; font-size: .9em; }
.muted { color: #777; }
"""


def render(data: dict) -> str:
    sections = [
        _overview(data),
        _rounds(data),
        _quality(data),
        _gallery(data),
        _corrections(data),
        _split(data),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>autolabel report: {escape(data['workspace'])}</title><style>{CSS}</style></head><body>"
        f'<h1>autolabel report</h1><p class="muted">workspace {escape(data["workspace"])}</p>'
        + "".join(sections)
        + "</body></html>\n"
    )


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_fmt(c)}</td>'
            if isinstance(c, int | float) or c is None
            else f"<td>{_fmt(c)}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">' if uri else ""


def _overview(data: dict) -> str:
    status = data["status"]
    images = status["images"]
    rows = [[name, count] for name, count in images.items()]
    classes = ", ".join(status["classes"]) or "none yet"
    return (
        "<h2>Workspace</h2>"
        f"<p>classes: {escape(classes)}; human-verified images: {status['labeled_images']}"
        f" ({status['labeled_boxes']} boxes)</p>" + _table(["image status", "count"], rows)
    )


def _rounds(data: dict) -> str:
    table = data["rounds"]
    if not table:
        return '<h2>Active-learning rounds</h2><p class="muted">no loop round evaluated yet</p>'
    rows = [
        [
            r["round"],
            r["labels"],
            r["boxes"],
            round((r["human_seconds"] or 0.0) / 60, 1),
            r["proposer_precision"],
            r["proposer_recall"],
            r["map50"],
            r["map50_95"],
            r["f1"],
        ]
        for r in table
    ]
    header = [
        "round",
        "labels",
        "boxes",
        "human min",
        "pre-label P",
        "pre-label R",
        "mAP50",
        "mAP50-95",
        "F1",
    ]
    return (
        "<h2>Active-learning rounds</h2>"
        + _table(header, rows)
        + _img(data["rounds_plot"], "mAP against labeled images and human time")
    )


def _quality(data: dict) -> str:
    metrics, run = data["metrics"], data["run"]
    if run is None or "map50_95" not in metrics:
        return '<h2>Current student</h2><p class="muted">no evaluated training run yet</p>'
    conf = metrics.get("conf", 0.25)
    summary = _table(
        ["run", "round", "train images", "val images", "mAP50", "mAP50-95", "AP small", "AP medium", "AP large"],
        [
            [
                run["id"], run["round"], run["n_train"], metrics.get("n_images"), metrics.get("map50"),
                metrics.get("map50_95"), metrics.get("ap_small"), metrics.get("ap_medium"), metrics.get("ap_large"),
            ]
        ],
    )  # fmt: skip
    per_class = metrics.get("per_class") or {}
    ap = metrics.get("per_class_ap") or {}
    prf = _table(
        ["class", "AP50-95", "precision", "recall", "F1", "TP", "FP", "FN"],
        [["all", metrics.get("map50_95"), metrics.get("precision"), metrics.get("recall"), metrics.get("f1"),
          metrics.get("tp"), metrics.get("fp"), metrics.get("fn")]]
        + [[name, ap.get(name), v["precision"], v["recall"], v["f1"], v["tp"], v["fp"], v["fn"]]
           for name, v in per_class.items()],
    )  # fmt: skip
    return (
        f"<h2>Current student (run {run['id']}) on the frozen validation set</h2>{summary}"
        f"<h3>Precision and recall at the operating threshold (conf &ge; {conf:g}, IoU {metrics.get('iou', 0.5):g})</h3>"
        f"{prf}{_img(data['per_class_plot'], 'AP per class and by size')}"
        f"<h3>Confusion matrix</h3>{_img(data['confusion_plot'], 'confusion matrix')}"
    )


def _gallery(data: dict) -> str:
    items = data["gallery"]
    if not items:
        return '<h2>Where the student is wrong</h2><p class="muted">no evaluated student yet</p>'
    parts = [
        "<h2>Where the student is wrong</h2><p>frozen-val images with the most false positives and misses</p>"
    ]
    for item in items:
        caption = f"{item['path']}: {item['false_positives']} false positives, {item['missed']} missed"
        parts.append(
            _pair(
                caption,
                (item["truth"], "ground truth", "ground truth"),
                (item["predicted"], "prediction", "predicted"),
            )
        )
    return "".join(parts)


def _corrections(data: dict) -> str:
    items = data["corrections"]
    if not items:
        return '<h2>Pre-labels and what humans changed</h2><p class="muted">nothing pulled from Label Studio yet</p>'
    parts = ["<h2>Pre-labels and what humans changed</h2>"]
    for item in items:
        changes = ", ".join(f"{n} {k}" for k, n in item["changes"].items())
        caption = f"{item['path']} (round {item['round']}): {changes}"
        parts.append(
            _pair(
                caption,
                (item["shown"], "pre-label", "pre-label shown"),
                (item["human"], "human", "after the human"),
            )
        )
    return "".join(parts)


def _pair(caption: str, *figures: tuple[str, str, str]) -> str:
    """A heading over images side by side; each figure is (image, alt text, caption)."""
    cells = "".join(
        f"<figure>{_img(src, alt)}<figcaption>{label}</figcaption></figure>" for src, alt, label in figures
    )
    return f'<h4>{escape(caption)}</h4><div class="pair">{cells}</div>'


def _split(data: dict) -> str:
    split = data["split"]
    if not split or not split["groups"]:
        return '<h2>Grouping and leaks</h2><p class="muted">no labeled images split yet</p>'
    rows = [[name, v["groups"], v["images"]] for name, v in split["groups"].items()]
    verdict = (
        "no group on both sides of the split and no near-duplicate pair across it"
        if not split["straddling"] and not split["n_leaks"]
        else f"{len(split['straddling'])} groups on both sides, {split['n_leaks']} near-duplicate pairs across"
    )
    leaks = ""
    if split["leaks"]:
        leaks = _table(["image", "split", "near-duplicate", "split", "cosine"], split["leaks"])
    return f"<h2>Grouping and leaks</h2>{_table(['split', 'groups', 'images'], rows)}<p>{escape(verdict)}</p>{leaks}"
