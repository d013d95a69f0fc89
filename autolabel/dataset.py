"""Group-aware train/val splits without leakage, with a frozen validation set.

The contract (what ``autolabel train`` relies on): an image with status ``'validation'`` is in
the frozen validation set; an image with status ``'labeled'`` is training data. ``split`` only
ever moves images from 'labeled' to 'validation', never back.

How a split is decided:

1. Every labeled image belongs to a *split group*: the union (union-find) of its group (its
   explicit CSV group (``--groups-csv``) when it has one, else its source group
   ``images.source_group``: auto / folder / filename regex / EXIF time gap, set at registration)
   and every image that is a near-duplicate of it
   (``autolabel.embeddings``: cosine >= ``NEAR_DUP_THRESHOLD`` with faiss).
2. A group never straddles train and val. Decisions are recorded in ``split_assignments`` and
   never revised: a new image whose group is already in val goes to val, one whose group is in
   train goes to train.
3. Only brand-new groups are free. The first split puts about ``val_fraction`` of the images (as
   whole groups, in a seeded random order) into val; later calls put new groups into train, unless
   ``grow_val=N`` asks for about N more val images (whole new groups only).
4. A group that already straddles (a new near-duplicate bridges a train and a val group, or
   source groups were changed) keeps its old assignments; its new images go to train and the
   cross-split near-duplicate pairs are listed by ``split_report`` as leaks.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.store import ImageRecord, Store

__all__ = [
    "SplitReport",
    "SplitResult",
    "load_groups_csv",
    "set_explicit_groups",
    "split",
    "split_report",
    "train_val_ids",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS split_runs (
    id INTEGER PRIMARY KEY,
    params TEXT NOT NULL,              -- JSON: val_fraction, seed, grow_val, threshold
    n_train_added INTEGER NOT NULL,
    n_val_added INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS split_assignments (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    split TEXT NOT NULL CHECK (split IN ('train', 'val')),
    split_group TEXT NOT NULL,         -- the merged group's name when it was assigned
    reason TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES split_runs(id)
);
CREATE TABLE IF NOT EXISTS explicit_groups (
    path TEXT PRIMARY KEY,             -- image path relative to the image root
    group_name TEXT NOT NULL           -- images sharing a name never straddle splits
);
"""

LABELED = ("labeled", "validation")


@dataclass
class SplitResult:
    n_train: int
    n_val: int
    added_train: int
    added_val: int
    groups: int
    near_duplicate_pairs: int
    straddling_groups: int
    notes: list[str] = field(default_factory=list)


@dataclass
class SplitReport:
    groups: list[tuple[str, str, int]]  # (group, 'train' | 'val' | 'train+val' | 'unsplit', images)
    leaks: list[tuple[str, str, str, str, float]]  # (path_a, split_a, path_b, split_b, cosine)
    straddling: list[tuple[str, int, int]]  # (group, train images, val images)
    unsplit: int


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, item):
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # deterministic representative: the smaller key wins
            if _key(rb) < _key(ra):
                ra, rb = rb, ra
            self.parent[rb] = ra


def _key(item) -> tuple:
    return (str(type(item)), str(item))


def load_groups_csv(path: Path) -> dict[str, str]:
    """Read 'path,group' rows (a header row is optional); paths are relative to the image root."""
    if not path.is_file():
        raise AutolabelError(f"groups CSV not found: {path}")
    mapping: dict[str, str] = {}
    with path.open(newline="") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise AutolabelError(f"{path}:{number}: expected 'path,group', got {','.join(row)!r}")
            image, group = row[0].strip(), row[1].strip()
            if (
                number == 1
                and image.lower() in ("path", "image", "file", "filename")
                and group.lower() == "group"
            ):
                continue
            mapping[Path(image).as_posix()] = group
    return mapping


def set_explicit_groups(store: Store, mapping: dict[str, str]) -> int:
    """Record explicit groups; every path must be a registered image (one error lists the rest)."""
    store.ensure_schema(SCHEMA)
    known = store.known_paths()
    unknown = sorted(p for p in mapping if p not in known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise AutolabelError(f"groups CSV names {len(unknown)} unregistered images: {shown}")
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO explicit_groups(path, group_name) VALUES (?, ?)"
            " ON CONFLICT(path) DO UPDATE SET group_name = excluded.group_name",
            sorted(mapping.items()),
        )
    return len(mapping)


def train_val_ids(store: Store) -> tuple[list[int], list[int]]:
    """Image ids of the training set ('labeled') and the frozen validation set ('validation')."""
    return [im.id for im in store.images(status="labeled")], [
        im.id for im in store.images(status="validation")
    ]


def _assignments(store: Store) -> dict[int, str]:
    return {r[0]: r[1] for r in store.conn.execute("SELECT image_id, split FROM split_assignments")}


def _groups(
    store: Store,
    image_root: Path,
    images: list[ImageRecord],
    threshold: float,
    advance: Callable[[int], None] | None,
) -> tuple[dict[int, str], list[tuple[int, int, float]]]:
    """image id -> merged group name, and the near-duplicate pairs among ``images``."""
    from autolabel.embeddings import ensure_embeddings, near_duplicate_pairs

    vectors = ensure_embeddings(store, image_root, images, advance=advance)
    pairs = near_duplicate_pairs(vectors, threshold)
    explicit = {r[0]: r[1] for r in store.conn.execute("SELECT path, group_name FROM explicit_groups")}
    # An explicit group replaces the image's automatic source group (it refines as well as ties).
    group_of = {im.id: explicit.get(im.path, im.source_group) for im in images}
    uf = _UnionFind()
    for im in images:
        kind = "csv" if im.path in explicit else "source"
        uf.union(("image", im.id), (kind, group_of[im.id]))
    for a, b, _ in pairs:
        uf.union(("image", a), ("image", b))
    members: dict = {}
    for im in images:
        members.setdefault(uf.find(("image", im.id)), []).append(im)
    names: dict[int, str] = {}
    for component in members.values():
        sources = sorted({group_of[im.id] for im in component})
        name = sources[0] if len(sources) == 1 else f"{sources[0]}+{len(sources) - 1}"
        for im in component:
            names[im.id] = name
    return names, pairs


def split(
    store: Store,
    image_root: Path,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    grow_val: int = 0,
    threshold: float | None = None,
    advance: Callable[[int], None] | None = None,
) -> SplitResult:
    """Assign every labeled image that has no split yet; see the module docstring for the rules."""
    from autolabel.embeddings import NEAR_DUP_THRESHOLD

    if not 0 < val_fraction < 1:
        raise AutolabelError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if grow_val < 0:
        raise AutolabelError("--grow-val must be 0 or more")
    threshold = NEAR_DUP_THRESHOLD if threshold is None else threshold
    store.ensure_schema(SCHEMA)
    images = store.images(status=LABELED)
    if not images:
        raise AutolabelError("no labeled images to split: import labels or pull them from Label Studio first")
    names, pairs = _groups(store, image_root, images, threshold, advance)
    assigned = _assignments(store)
    # A 'validation' image without a record (set by hand or by an older version) counts as val.
    for im in images:
        if im.status == "validation" and im.id not in assigned:
            assigned[im.id] = "val"

    components: dict[str, list[ImageRecord]] = {}
    for im in images:
        components.setdefault(names[im.id], []).append(im)
    decisions: dict[int, tuple[str, str]] = {}  # image id -> (split, reason)
    fresh: list[str] = []
    straddling = 0
    for name in sorted(components):
        members = components[name]
        splits = {assigned[im.id] for im in members if im.id in assigned}
        new = [im for im in members if im.id not in assigned and im.id not in decisions]
        if len(splits) == 2:
            straddling += 1
            decisions.update({im.id: ("train", "its group already straddles train and val") for im in new})
        elif splits == {"val"}:
            decisions.update({im.id: ("val", "its group is in val") for im in new})
        elif splits == {"train"}:
            decisions.update({im.id: ("train", "its group is in train") for im in new})
        else:
            fresh.append(name)

    notes: list[str] = []
    rng = np.random.default_rng(seed)
    order = [fresh[i] for i in rng.permutation(len(fresh))]
    has_val = "val" in assigned.values()
    has_train = "train" in assigned.values() or any(d == "train" for d, _ in decisions.values())
    chosen: set[str] = set()
    if not has_val:
        if len(fresh) < 2:
            raise AutolabelError(
                f"all {len(images)} labeled images form one group (shared source group or near-duplicates),"
                " so any validation set would leak: group them finer (autolabel.yaml grouping, --groups-csv)"
                " or label images from other sources"
            )
        target = max(1, round(val_fraction * len(images)))
        chosen |= _fill(order, components, target)
        if len(chosen) == len(fresh):  # keep at least one group for training
            chosen.discard(max(chosen, key=lambda n: (len(components[n]), n)))
    if grow_val:
        remaining = [name for name in order if name not in chosen]
        grown = _fill(remaining, components, grow_val)
        if not grown:
            notes.append(f"--grow-val {grow_val}: no new group to add to val (only new groups can join it)")
        elif sum(len(components[n]) for n in grown) < grow_val:
            notes.append(
                f"--grow-val {grow_val}: only {sum(len(components[n]) for n in grown)} new images available"
            )
        if not has_train and grown and chosen | grown >= set(fresh):  # keep a group for training
            grown.discard(max(grown, key=lambda n: (len(components[n]), n)))
        chosen |= grown
    for name in fresh:
        target_split = "val" if name in chosen else "train"
        reason = "new group chosen for val" if name in chosen else "new group"
        decisions.update({im.id: (target_split, reason) for im in components[name]})

    added_val = sum(1 for s, _ in decisions.values() if s == "val")
    added_train = len(decisions) - added_val
    params = {"val_fraction": val_fraction, "seed": seed, "grow_val": grow_val, "threshold": threshold}
    with store.transaction():
        run_id = store.conn.execute(
            "INSERT INTO split_runs(params, n_train_added, n_val_added) VALUES (?, ?, ?)",
            (json.dumps(params), added_train, added_val),
        ).lastrowid
        store.conn.executemany(
            "INSERT INTO split_assignments(image_id, split, split_group, reason, run_id) VALUES (?, ?, ?, ?, ?)",
            [(i, s, names[i], reason, run_id) for i, (s, reason) in sorted(decisions.items())],
        )
        val_ids = [i for i, s in _assignments(store).items() if s == "val"]
        store.set_status(val_ids, "validation", only_from=["labeled"])
        for im in images:  # 'validation' without a record: record it so it stays frozen
            if im.status == "validation" and im.id not in decisions:
                store.conn.execute(
                    "INSERT OR IGNORE INTO split_assignments(image_id, split, split_group, reason, run_id)"
                    " VALUES (?, 'val', ?, 'was already validation', ?)",
                    (im.id, names[im.id], run_id),
                )
    final = _assignments(store)
    return SplitResult(
        n_train=sum(1 for im in images if final.get(im.id) == "train"),
        n_val=sum(1 for im in images if final.get(im.id) == "val"),
        added_train=added_train,
        added_val=added_val,
        groups=len(components),
        near_duplicate_pairs=len(pairs),
        straddling_groups=straddling,
        notes=notes,
    )


def _fill(order: list[str], components: dict[str, list], target: int) -> set[str]:
    """Whole groups, taken in the given order when they bring the total closer to ``target``.

    When every group is more than twice the target, the smallest one is taken: a validation set
    too big beats none.
    """
    chosen: set[str] = set()
    total = 0
    for name in order:
        size = len(components[name])
        if abs(total + size - target) < abs(total - target):
            chosen.add(name)
            total += size
    if not chosen and order:
        chosen.add(min(order, key=lambda n: len(components[n])))
    return chosen


def split_report(
    store: Store,
    image_root: Path,
    threshold: float | None = None,
    advance: Callable[[int], None] | None = None,
) -> SplitReport:
    """Group sizes per split, straddling groups and near-duplicate pairs across splits (leaks)."""
    from autolabel.embeddings import NEAR_DUP_THRESHOLD

    threshold = NEAR_DUP_THRESHOLD if threshold is None else threshold
    store.ensure_schema(SCHEMA)
    images = store.images(status=LABELED)
    if not images:
        return SplitReport(groups=[], leaks=[], straddling=[], unsplit=0)
    names, pairs = _groups(store, image_root, images, threshold, advance)
    assigned = _assignments(store)
    by_id = {im.id: im for im in images}
    sizes: dict[str, dict[str, int]] = {}
    for im in images:
        split_name = assigned.get(im.id, "unsplit")
        counts = sizes.setdefault(names[im.id], {})
        counts[split_name] = counts.get(split_name, 0) + 1
    groups = []
    straddling = []
    for name in sorted(sizes, key=lambda n: (-sum(sizes[n].values()), n)):
        counts = sizes[name]
        label = "+".join(s for s in ("train", "val", "unsplit") if s in counts)
        groups.append((name, label, sum(counts.values())))
        if counts.get("train") and counts.get("val"):
            straddling.append((name, counts["train"], counts["val"]))
    leaks = []
    for a, b, score in pairs:
        sa, sb = assigned.get(a), assigned.get(b)
        if sa and sb and sa != sb:
            leaks.append((by_id[a].path, sa, by_id[b].path, sb, score))
    return SplitReport(
        groups=groups,
        leaks=leaks,
        straddling=straddling,
        unsplit=sum(1 for im in images if im.id not in assigned),
    )
