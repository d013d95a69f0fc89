"""Registering a folder of images: new files only, probed in parallel, bad files recorded."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from autolabel.config import GroupingConfig
from autolabel.errors import AutolabelError
from autolabel.images import (
    Grouping,
    ImageDecodeError,
    auto_grouping,
    decode,
    discover,
    file_sha256,
    folder_group,
    format_seconds,
    regex_group,
    time_gap_groups,
)
from autolabel.store import Store

CHUNK = 256


@dataclass
class ScanSummary:
    found: int = 0
    new: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, conversion)
    grouping: Grouping | None = None  # the rule the source groups follow, and the groups it made


def probe(path: Path, rel_path: str) -> dict:
    """Everything the registry records about one file; a bad file yields an 'error' row."""
    row: dict = {"path": rel_path, "size_bytes": path.stat().st_size}
    row["sha256"] = file_sha256(path)
    try:
        image = decode(path)
    except ImageDecodeError as exc:
        return {**row, "status": "error", "error": str(exc), "width": None, "height": None}
    return {
        **row,
        "width": image.width,
        "height": image.height,
        "note": image.note,
        "captured_at": image.captured_at,
    }


def make_grouper(config: GroupingConfig) -> Callable[[str], str]:
    if config.mode == "regex":
        if not config.regex:
            raise AutolabelError("grouping.mode is 'regex' but grouping.regex is not set in autolabel.yaml")
        try:
            pattern = re.compile(config.regex)
        except re.error as exc:
            raise AutolabelError(f"grouping.regex is not a valid regular expression: {exc}") from None
        return lambda rel: regex_group(rel, pattern)
    return folder_group  # auto and exif_gap are regrouped over all images after registration


def register_images(
    store: Store,
    image_root: Path,
    grouping: GroupingConfig,
    advance: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ScanSummary:
    paths = discover(image_root)
    known = store.known_paths()
    new = [(p, p.relative_to(image_root).as_posix()) for p in paths]
    new = [(p, rel) for p, rel in new if rel not in known]
    summary = ScanSummary(found=len(paths), new=len(new))
    unnamed = [(p, rel) for p, rel in new if not _utf8(rel)]
    for _, rel in unnamed:  # SQLite, JSON and Label Studio all need text: report it, register the rest
        summary.errors.append(
            (_printable(rel), "file name is not valid UTF-8 (rename the file to register it)")
        )
    new = [(p, rel) for p, rel in new if _utf8(rel)]
    # One rule everywhere: a symlink that leads out of the image folder is refused here, with the
    # reason, so that nothing is proposed, exported or trained that push would then refuse.
    root = Path(image_root).resolve()
    escaping = [(p, rel) for p, rel in new if not p.resolve().is_relative_to(root)]
    for _, rel in escaping:
        summary.errors.append(
            (rel, "a symbolic link to a file outside the image folder (copy the file in instead)")
        )
    new = [(p, rel) for p, rel in new if p.resolve().is_relative_to(root)]
    if on_total:
        on_total(len(new))
    grouper = make_grouper(grouping)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(new), CHUNK):
            chunk = new[start : start + CHUNK]
            rows = list(pool.map(lambda item: probe(*item), chunk))
            for row in rows:
                row["source_group"] = _group_for(store, row, grouper)
                if row.get("error"):
                    summary.errors.append((row["path"], row["error"]))
                elif row.get("note"):
                    summary.notes.append((row["path"], row["note"]))
            store.add_images(rows)
            if advance:
                advance(len(chunk))
    summary.grouping = apply_grouping(store, grouping)
    return summary


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    """A file name with undecodable bytes shown as U+FFFD (never raises)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _group_for(store: Store, row: dict, grouper: Callable[[str], str]) -> str:
    """Exact duplicates (same bytes) join the first copy's group, so they never straddle a split."""
    twin = store.image_by_sha(row["sha256"])
    if twin is not None:
        row["note"] = "; ".join(filter(None, [row.get("note"), f"same content as {twin.path}"]))
        return twin.source_group
    return grouper(row["path"])


GROUPING_META = "grouping_rule"
_RULES = {"folder": "folders", "regex": "file-name regex"}


def apply_grouping(store: Store, config: GroupingConfig) -> Grouping:
    """Regroup every image by a rule that looks at all of them (auto, exif_gap), record the rule.

    Frozen validation images keep their group; exact duplicates (same bytes) share the group of
    the first copy, so they never straddle a split.
    """
    usable = store.images()
    if config.mode == "auto":
        grouping = auto_grouping((im.path, im.captured_at) for im in usable)
    elif config.mode == "exif_gap":
        groups = time_gap_groups(((im.path, im.captured_at) for im in usable), config.gap_seconds)
        grouping = Grouping("EXIF capture-time sessions", groups, f"gap {format_seconds(config.gap_seconds)}")
    else:
        grouping = Grouping(_RULES[config.mode], {im.path: im.source_group for im in usable})
    if config.mode in ("auto", "exif_gap"):
        first_of: dict[str, str] = {}
        with store.transaction():
            for im in sorted(usable, key=lambda im: im.id):
                group = first_of.setdefault(im.sha256, grouping.groups[im.path])
                grouping.groups[im.path] = group
                if im.status != "validation" and group != im.source_group:
                    store.update_image(im.id, source_group=group)
    store.set_meta(GROUPING_META, json.dumps({"rule": grouping.rule, "detail": grouping.detail}))
    return grouping


def recorded_grouping(store: Store) -> Grouping | None:
    """The rule the last registration used, with the source groups the images have now."""
    raw = store.get_meta(GROUPING_META)
    if raw is None:
        return None
    rule = json.loads(raw)
    groups = {im.path: im.source_group for im in store.images()}
    return Grouping(rule["rule"], groups, rule.get("detail", ""))
