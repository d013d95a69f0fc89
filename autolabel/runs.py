"""Training runs: the ``runs`` table, a typed ``Run``, and the one place that picks "the run".

A run row is written by ``autolabel.train`` (``start`` before training, ``finish`` after) and
completed by ``autolabel.evaluate`` (``merge_metrics``); everyone else reads typed ``Run`` values
through the selection helpers here: the newest finished student (``latest_finished``, optionally
from before a round and with its weights on disk), the one of a round (``finished_in_round``), the
one to export (``select``: a named run or the best mAP50-95), and ``get`` by id. No other module
writes SQL against ``runs``.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    import sqlite3

    from autolabel.store import Store
    from autolabel.workspace import Workspace

RUN_STATUSES = ("started", "finished", "failed")
# Where a run's metrics keep the student backend's own validation numbers (``{"backend": ..., ...}``);
# runs recorded before there was a second backend keep ultralytics' under "ultralytics".
TRAINER_KEY = "trainer"
_OLD_TRAINER_KEY = "ultralytics"

# Byte for byte the table every workspace already has (SQLite keeps this text in sqlite_master).
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'train',
    status TEXT NOT NULL DEFAULT 'started',   -- started | finished | failed
    params TEXT NOT NULL,            -- JSON hyperparameters
    train_hash TEXT,                 -- sha256 over the sorted train image hashes
    val_hash TEXT,                   -- sha256 over the sorted val image hashes
    n_train INTEGER,
    n_val INTEGER,
    weights_path TEXT,
    metrics TEXT,                    -- JSON
    started_at TEXT NOT NULL DEFAULT (datetime('now')),
    finished_at TEXT
);
"""


@dataclass(frozen=True, kw_only=True)
class Run:
    """One row of ``runs``, its JSON columns parsed (``{}`` when empty)."""

    id: int
    round: int = 0
    kind: str = "train"
    status: str = "started"  # started | finished | failed
    params: dict = field(default_factory=dict)  # hyperparameters, model source, lineage, pid/host
    train_hash: str | None = None  # images_hash of the train images
    val_hash: str | None = None  # images_hash of the val images
    n_train: int | None = None
    n_val: int | None = None
    weights_path: str | None = None
    # ours (evaluate), "trainer" (the backend's own), "train" timing
    metrics: dict = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        values = dict(row)
        values["params"] = json.loads(values["params"] or "{}")
        values["metrics"] = json.loads(values["metrics"]) if values["metrics"] else {}
        return cls(**values)

    def weights_file(self, root: Path) -> Path:
        """The weights on disk (a relative path is taken from ``root``); an error when missing."""
        path = Path(self.weights_path or "")
        path = path if path.is_absolute() else root / path
        if not self.weights_path or not path.is_file():
            raise AutolabelError(f"run {self.id}: weights file not found: {path}")
        return path

    def imgsz(self, default: int) -> int:
        """The image size the run trained at (``default`` for a run that did not record one)."""
        value = self.params.get("imgsz", default)
        return int(value[0] if isinstance(value, (list, tuple)) else value)

    @property
    def origin(self) -> tuple[str, bool]:
        """(the weights file name the run's lineage started from, whether they were pretrained);
        runs recorded before ``base_weights`` existed fall back to their own model source."""
        params = self.params
        name = (
            params.get("base_weights")
            or Path(str(params.get("model_source") or params.get("model") or "?")).name
        )
        return name, bool(params.get("base_pretrained", params.get("pretrained")))

    @property
    def started_from(self) -> str:
        """'yolo11n.pt (pretrained)' / 'yolo11n.yaml (random init)' for status and the model card."""
        name, pretrained = self.origin
        return f"{name} ({'pretrained' if pretrained else 'random init'})"


def ensure_schema(store: Store) -> None:
    store.ensure_schema(SCHEMA)


# -- writing ------------------------------------------------------------------------------------


def start(
    store: Store,
    params: dict,
    *,
    round_index: int = 0,
    kind: str = "train",
    train_hash: str | None = None,
    val_hash: str | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
) -> int:
    """Record a run as 'started' before any work is done; its id."""
    ensure_schema(store)
    with store.transaction():
        cur = store.conn.execute(
            "INSERT INTO runs(round, kind, params, train_hash, val_hash, n_train, n_val)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (round_index, kind, json.dumps(params, sort_keys=True), train_hash, val_hash, n_train, n_val),
        )
    return int(cur.lastrowid)


def finish(
    store: Store,
    run_id: int,
    status: str,
    *,
    weights_path: str | None = None,
    metrics: dict | None = None,
) -> None:
    """Set a run's final status, weights and metrics (None clears them)."""
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    ensure_schema(store)
    with store.transaction():
        store.conn.execute(
            "UPDATE runs SET status = ?, weights_path = ?, metrics = ?, finished_at = datetime('now')"
            " WHERE id = ?",
            (status, weights_path, None if metrics is None else json.dumps(metrics), run_id),
        )


def merge_metrics(store: Store, run: Run, metrics: dict) -> None:
    """Add (or replace) metric keys of a run, keeping the others, its status and its weights."""
    finish(store, run.id, run.status, weights_path=run.weights_path, metrics={**run.metrics, **metrics})


def reconcile_interrupted(store: Store) -> list[int]:
    """Mark 'started' runs whose process on this host is gone as 'failed'; their ids."""
    from autolabel.runtime import pid_alive

    stale = []
    for run in all_runs(store, status="started"):
        pid, host = run.params.get("pid"), run.params.get("host")
        if pid is None or host != socket.gethostname() or pid_alive(int(pid)):
            continue  # an older run without a pid, another machine's, or still running
        stale.append(run.id)
    for run_id in stale:
        finish(
            store, run_id, "failed", metrics={"error": "interrupted: its process ended before it finished"}
        )
    return stale


# -- reading ------------------------------------------------------------------------------------


def all_runs(store: Store, *, status: str | None = None, kind: str | None = None) -> list[Run]:
    """Every run (with this status / kind), oldest first."""
    ensure_schema(store)
    rows = store.conn.execute(
        "SELECT * FROM runs WHERE (? IS NULL OR status = ?) AND (? IS NULL OR kind = ?) ORDER BY id",
        (status, status, kind, kind),
    )
    return [Run.from_row(row) for row in rows]


def get(store: Store, run_id: int) -> Run | None:
    ensure_schema(store)
    row = store.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else Run.from_row(row)


def latest_finished(
    store: Store, *, before_round: int | None = None, weights_on_disk: bool = False
) -> Run | None:
    """The newest finished training run with weights, optionally from a round before ``before_round``
    and only if its weights file exists."""
    found = [r for r in all_runs(store, status="finished", kind="train") if r.weights_path]
    if before_round is not None:
        found = [r for r in found if r.round < before_round]
    if weights_on_disk:
        found = [r for r in found if Path(r.weights_path).is_file()]
    return found[-1] if found else None


def finished_in_round(store: Store, round_index: int) -> Run | None:
    """The newest finished training run recorded in this round (a loop round trains once)."""
    found = [r for r in all_runs(store, status="finished", kind="train") if r.round == round_index]
    return found[-1] if found else None


def select(store: Store, run_id: int | None = None) -> Run:
    """The named run, or the finished run with the highest validation mAP50-95 (export, bench)."""
    return choose(all_runs(store), run_id)


def choose(candidates: Sequence[Run], run_id: int | None = None) -> Run:
    """``select`` over given runs: the named one (it must be finished with weights), else the
    finished run with weights and the highest mAP50-95; the later run wins a tie."""
    finished = [r for r in candidates if r.status == "finished" and r.weights_path]
    if run_id is not None:
        for run in candidates:
            if run.id == run_id:
                if run.status != "finished" or not run.weights_path:
                    raise AutolabelError(f"run {run_id} is {run.status} and has no weights to export")
                return run
        known = ", ".join(str(r.id) for r in finished) or "none"
        raise AutolabelError(f"no run {run_id} in this workspace (finished runs: {known})")
    if not finished:
        raise AutolabelError("no finished training run to export: run 'autolabel train' first")
    return max(finished, key=lambda r: (_score(r.metrics.get("map50_95")), r.id))


def _score(value) -> float:
    return -1.0 if value is None else float(value)


# -- lineage ------------------------------------------------------------------------------------


def lineage_origin(
    store: Store, *, resume_from: str | None, source: str, pretrained: bool
) -> tuple[str, bool]:
    """The weights a new run's lineage starts from (a name, never a full path) and whether they were
    pretrained: a warm start from ``resume_from`` inherits them from the run that produced those
    weights; otherwise they are the run's own model ``source``."""
    if resume_from is None:
        return Path(source).name, pretrained
    resumed = str(Path(resume_from).resolve())
    for run in all_runs(store, status="finished"):
        if (
            run.weights_path
            and str(Path(run.weights_path).resolve()) == resumed
            and "base_weights" in run.params
        ):
            return run.params["base_weights"], bool(run.params.get("base_pretrained"))
    return Path(resume_from).name, True


def images_hash(sha256s: Iterable[str]) -> str:
    """sha256 over the sorted image content hashes: the same images give the same id, in any order."""
    return hashlib.sha256("\n".join(sorted(sha256s)).encode()).hexdigest()


def trainer_metrics(metrics: dict) -> dict:
    """The backend's own validation numbers of a run's ``metrics`` (with its ``backend``), also for
    YOLO runs recorded under the old "ultralytics" key; ``{}`` when there are none."""
    if TRAINER_KEY in metrics:
        return dict(metrics[TRAINER_KEY] or {})
    if metrics.get(_OLD_TRAINER_KEY):
        return {"backend": "yolo", **metrics[_OLD_TRAINER_KEY]}
    return {}


def run_directory(workspace: Workspace, run_id: int) -> Path:
    """Where a run's dataset, ultralytics output, weights and evaluation live."""
    return workspace.runs_dir / f"run-{run_id}"


__all__: Sequence[str] = (
    "Run",
    "all_runs",
    "choose",
    "ensure_schema",
    "finish",
    "finished_in_round",
    "get",
    "images_hash",
    "latest_finished",
    "lineage_origin",
    "merge_metrics",
    "reconcile_interrupted",
    "run_directory",
    "select",
    "start",
    "trainer_metrics",
)
