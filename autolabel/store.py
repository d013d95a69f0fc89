"""SQLite state of a workspace: images, classes, predictions, human labels.

Every state change is committed before the program acts on it, so a crash at any point
resumes without duplicates or loss. Modules that own more state (Label Studio sync,
training runs, loop rounds) create their own tables through ``Store.ensure_schema``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations only

IMAGE_STATUSES = ("unlabeled", "proposed", "in_review", "labeled", "validation", "error")

CORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY,          -- stable forever once created; new classes append
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,       -- POSIX path relative to the image root
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    width INTEGER,                   -- after EXIF orientation
    height INTEGER,
    source_group TEXT NOT NULL,
    captured_at TEXT,                -- EXIF DateTimeOriginal (ISO), for grouping by time gap
    status TEXT NOT NULL DEFAULT 'unlabeled',
    note TEXT,                       -- a conversion made while decoding (e.g. CMYK -> RGB)
    error TEXT,                      -- why the image cannot be used (status 'error')
    added_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images(sha256);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS predictions (
    image_id INTEGER NOT NULL REFERENCES images(id),
    model_key TEXT NOT NULL,         -- model + weights + ontology fingerprint + thresholds
    model_version TEXT NOT NULL,     -- what Label Studio shows as model_version
    detections TEXT NOT NULL,        -- JSON, class ids are classes.id
    error TEXT,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (image_id, model_key)
);
CREATE TABLE IF NOT EXISTS labels (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    source TEXT NOT NULL,            -- 'import' | 'studio'
    detections TEXT NOT NULL,        -- JSON in image pixels, class ids are classes.id
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);
"""


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str
    sha256: str
    size_bytes: int
    width: int | None
    height: int | None
    source_group: str
    captured_at: str | None
    status: str
    note: str | None
    error: str | None


_IMAGE_COLUMNS = "id, path, sha256, size_bytes, width, height, source_group, captured_at, status, note, error"


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> Store:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        store = cls(conn, path)
        store.ensure_schema(CORE_SCHEMA)
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ensure_schema(self, script: str) -> None:
        # Idempotent DDL (CREATE ... IF NOT EXISTS); executescript commits on its own.
        self.conn.executescript(script)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; nested use joins the outer transaction."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- classes ----------------------------------------------------------------------------
    def workspace_id(self) -> str:
        """A stable random id for this workspace (created on first use): what makes its Label Studio
        project and tasks its own, whatever their titles."""
        found = self.get_meta("workspace_id")
        if found:
            return found
        import uuid

        with self.transaction():
            self.conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('workspace_id', ?)", (uuid.uuid4().hex,)
            )
        return str(self.get_meta("workspace_id"))

    def class_names(self) -> list[str]:
        """Class names by id; ids are 0..n-1 and never change once created."""
        return [r[0] for r in self.conn.execute("SELECT name FROM classes ORDER BY id")]

    def ensure_classes(self, names: Iterable[str]) -> dict[str, int]:
        """Register unknown names at the end; return name -> id for every class."""
        with self.transaction():
            existing = {r[1]: r[0] for r in self.conn.execute("SELECT id, name FROM classes")}
            for name in names:
                if name not in existing:
                    new_id = len(existing)
                    self.conn.execute("INSERT INTO classes(id, name) VALUES (?, ?)", (new_id, name))
                    existing[name] = new_id
        return existing

    # -- images -----------------------------------------------------------------------------
    def known_paths(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT path FROM images")}

    def add_images(self, rows: Iterable[dict]) -> int:
        """Insert new images (dicts with the ``images`` columns); existing paths are left alone."""
        count = 0
        with self.transaction():
            for row in rows:
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO images(path, sha256, size_bytes, width, height, source_group,"
                    " captured_at, status, note, error) VALUES (:path, :sha256, :size_bytes, :width,"
                    " :height, :source_group, :captured_at, :status, :note, :error)",
                    {"note": None, "error": None, "status": "unlabeled", "captured_at": None, **row},
                )
                count += cur.rowcount
        return count

    def images(
        self,
        status: str | Iterable[str] | None = None,
        ids: Iterable[int] | None = None,
        include_errors: bool = False,
    ) -> list[ImageRecord]:
        sql = f"SELECT {_IMAGE_COLUMNS} FROM images"
        clauses, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params += statuses
        elif not include_errors:
            clauses.append("status != 'error'")
        if ids is not None:
            ids = list(ids)
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            params += ids
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id"
        return [ImageRecord(*r) for r in self.conn.execute(sql, params)]

    def image_by_sha(self, sha256: str) -> ImageRecord | None:
        row = self.conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images WHERE sha256 = ? ORDER BY id LIMIT 1", (sha256,)
        ).fetchone()
        return ImageRecord(*row) if row else None

    def set_status(self, ids: Iterable[int], status: str, only_from: Iterable[str] | None = None) -> None:
        if status not in IMAGE_STATUSES:
            raise ValueError(f"unknown image status {status!r}")
        sql = "UPDATE images SET status = ? WHERE id = ?"
        if only_from is not None:
            allowed = list(only_from)
            sql += f" AND status IN ({','.join('?' * len(allowed))})"
        else:
            allowed = []
        with self.transaction():
            for image_id in ids:
                self.conn.execute(sql, (status, image_id, *allowed))

    def mark_error(self, image_id: int, error: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE images SET status = 'error', error = ? WHERE id = ?", (error, image_id))

    def update_image(self, image_id: int, **fields) -> None:
        allowed = {"width", "height", "note", "error", "source_group", "status"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update image columns {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction():
            self.conn.execute(f"UPDATE images SET {sets} WHERE id = ?", (*fields.values(), image_id))

    def status_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT status, COUNT(*) FROM images GROUP BY status")}

    def usable_image_ids(self) -> set[int]:
        """Every image that is not in status 'error'."""
        return {r[0] for r in self.conn.execute("SELECT id FROM images WHERE status != 'error'")}

    def usable_image_page(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """(id, path) of up to ``limit`` usable images with ids above ``after_id``, by id (keyset paging)."""
        rows = self.conn.execute(
            "SELECT id, path FROM images WHERE status != 'error' AND id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [(r[0], r[1]) for r in rows]

    # -- predictions ------------------------------------------------------------------------
    def predicted_ids(self, model_key: str) -> set[int]:
        """Images with an error-free prediction under this key (model failures are retried)."""
        rows = self.conn.execute(
            "SELECT image_id FROM predictions WHERE model_key = ? AND error IS NULL", (model_key,)
        )
        return {r[0] for r in rows}

    def save_predictions(self, rows: Iterable[tuple[int, str, str, str, str | None]]) -> None:
        """Rows of (image_id, model_key, model_version, detections_json, error), replacing older ones."""
        with self.transaction():
            for image_id, model_key, model_version, detections_json, error in rows:
                self.conn.execute(
                    "INSERT INTO predictions(image_id, model_key, model_version, detections, error)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(image_id, model_key) DO UPDATE SET"
                    " model_version = excluded.model_version, detections = excluded.detections,"
                    " error = excluded.error, created_at = datetime('now')",
                    (image_id, model_key, model_version, detections_json, error),
                )
                if error is None:
                    self.conn.execute(
                        "UPDATE images SET status = 'proposed' WHERE id = ? AND status = 'unlabeled'",
                        (image_id,),
                    )

    def latest_predictions(
        self, image_ids: Iterable[int] | None = None, *, model_prefix: str | None = None
    ) -> dict[int, tuple[str, str]]:
        """image_id -> (model_version, detections_json) of its newest error-free prediction
        (of a model whose version starts with ``model_prefix``, when given)."""
        sql = (
            "SELECT image_id, model_version, detections FROM predictions WHERE error IS NULL"
            " AND (? IS NULL OR substr(model_version, 1, length(?)) = ?) ORDER BY created_at, rowid"
        )
        latest = {r[0]: (r[1], r[2]) for r in self.conn.execute(sql, (model_prefix,) * 3)}
        if image_ids is None:
            return latest
        return {i: latest[i] for i in image_ids if i in latest}

    def predictions_with_paths(self, model_key: str, limit: int) -> list[tuple[str, str]]:
        """(image path, detections_json) of the first ``limit`` error-free predictions under a key, by image id."""
        rows = self.conn.execute(
            "SELECT i.path, p.detections FROM predictions p JOIN images i ON i.id = p.image_id"
            " WHERE p.model_key = ? AND p.error IS NULL ORDER BY i.id LIMIT ?",
            (model_key, limit),
        )
        return [(r[0], r[1]) for r in rows]

    def prediction_summary(self) -> list[dict]:
        """Per model version, oldest first: images predicted, how many failed, boxes in total."""
        rows = self.conn.execute(
            "SELECT model_version, COUNT(*), SUM(error IS NOT NULL),"
            " SUM(COALESCE(json_array_length(detections, '$.xyxy'), 0))"
            " FROM predictions GROUP BY model_version ORDER BY MIN(created_at)"
        )
        return [
            {"model_version": version, "images": images, "errors": errors or 0, "boxes": boxes or 0}
            for version, images, errors, boxes in rows
        ]

    # -- human labels -----------------------------------------------------------------------
    def set_labels(self, image_id: int, source: str, detections_json: str, status: str = "labeled") -> None:
        """Store verified boxes; an image already frozen into validation keeps that status."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO labels(image_id, source, detections) VALUES (?, ?, ?)"
                " ON CONFLICT(image_id) DO UPDATE SET source = excluded.source,"
                " detections = excluded.detections, updated_at = datetime('now')",
                (image_id, source, detections_json),
            )
            self.conn.execute(
                "UPDATE images SET status = ? WHERE id = ? AND status != 'validation'", (status, image_id)
            )

    def remove_labels(self, image_id: int, *, source: str, status: str) -> bool:
        """Delete an image's labels when they came from ``source``; a 'labeled' image gets ``status``
        (a validation image stays in the frozen set, without labels until it is labeled again)."""
        with self.transaction():
            cur = self.conn.execute(
                "DELETE FROM labels WHERE image_id = ? AND source = ?", (image_id, source)
            )
            if cur.rowcount:
                self.conn.execute(
                    "UPDATE images SET status = ? WHERE id = ? AND status = 'labeled'", (status, image_id)
                )
        return bool(cur.rowcount)

    def labels(self, image_ids: Iterable[int] | None = None) -> dict[int, str]:
        """image_id -> detections_json of its verified labels."""
        rows = self.conn.execute("SELECT image_id, detections FROM labels")
        found = {r[0]: r[1] for r in rows}
        if image_ids is None:
            return found
        return {i: found[i] for i in image_ids if i in found}

    def label_sources(self) -> dict[int, str]:
        """image_id -> where its verified labels came from ('import', 'studio', ...)."""
        return {r[0]: r[1] for r in self.conn.execute("SELECT image_id, source FROM labels")}

    def labels_with_source(self) -> list[tuple[str, str]]:
        """(source, detections_json) of every image's verified labels."""
        return [(r[0], r[1]) for r in self.conn.execute("SELECT source, detections FROM labels")]
