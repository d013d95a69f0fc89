"""The local propose engine: stream images from the store through a proposer, persist as we go.

Decoding runs in a background thread while the model runs on the previous batch; at most
``prefetch`` decoded batches wait in a bounded queue, so memory stays flat however many images
there are. Results are committed per batch, so an interrupted run resumes where it stopped
(images already proposed under the same model key are skipped unless ``force``).

``run_proposals_on`` runs the same ``BatchMapper`` on another engine (``autolabel.engines``:
Ray), committing results as they stream back.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from autolabel import detections as dets
from autolabel.engines.base import Engine
from autolabel.errors import AutolabelError
from autolabel.images import ImageDecodeError, decode
from autolabel.proposers.base import BatchMapper, ProposerSettings
from autolabel.store import Store

PAGE = 512
_DONE = object()


@dataclass
class ProposeSummary:
    todo: int = 0
    proposed: int = 0
    skipped: int = 0
    boxes_per_class: Counter = field(default_factory=Counter)
    decode_errors: list[tuple[str, str]] = field(default_factory=list)
    model_errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.proposed / self.seconds if self.seconds > 0 else 0.0


def model_key(settings: ProposerSettings, model_version: str, ontology_fingerprint: str) -> str:
    """Same key = same model, weights, ontology and output-affecting settings: safe to skip."""
    payload = json.dumps(
        {
            "model": settings.model,
            "version": model_version,
            "ontology": ontology_fingerprint,
            "box": settings.box_threshold,
            "text": settings.text_threshold,
            "max_det": settings.max_det,
            "nms": settings.nms_iou,
            "agnostic": settings.class_agnostic_nms,
            "max_side": settings.max_side,
        },
        sort_keys=True,
    )
    return f"{settings.model}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


LAST_PROPOSER_META = "last_proposer"


def remember_proposer(
    store: Store,
    settings: ProposerSettings,
    key: str,
    model_version: str,
    ontology_fingerprint: str,
    runtime: dict | None = None,
) -> None:
    """Record the model key of a finished ``propose``, so the loop can reuse its pre-labels
    without loading the model again (``remembered_key``); ``runtime``: the runtime it ran in
    (``runtime``, and ``runtime_reason``: what ``runtime: auto`` chose and why)."""
    record = {
        "key": key,
        "model_version": model_version,
        "model_path": settings.model_path,
        "ontology": ontology_fingerprint,
        **(runtime or {}),
    }
    store.set_meta(LAST_PROPOSER_META, json.dumps(record))


def remembered_key(
    store: Store, settings: ProposerSettings, ontology_fingerprint: str
) -> tuple[str, str] | None:
    """(model key, model version) of the last ``propose`` when it ran with these settings,
    weights and ontology; None otherwise."""
    raw = store.get_meta(LAST_PROPOSER_META)
    if not raw:
        return None
    record = json.loads(raw)
    if record.get("model_path") != settings.model_path or record.get("ontology") != ontology_fingerprint:
        return None
    key = model_key(settings, record["model_version"], ontology_fingerprint)
    return (key, record["model_version"]) if key == record["key"] else None


def pending_rows(
    store: Store, image_root: Path, key: str, force: bool, only: frozenset[int] | None = None
) -> Iterator[list[dict]]:
    """Pages of ``{id, path, rel}`` rows still to propose, read lazily from SQLite."""
    done = set() if force else store.predicted_ids(key)
    last_id = 0
    while True:
        page = store.usable_image_page(last_id, PAGE)
        if not page:
            return
        last_id = page[-1][0]
        rows = [
            {"id": r[0], "path": str(image_root / r[1]), "rel": r[1]}
            for r in page
            if r[0] not in done and (only is None or r[0] in only)
        ]
        if rows:
            yield rows


def count_pending(store: Store, key: str, force: bool, only: frozenset[int] | None = None) -> tuple[int, int]:
    usable = store.usable_image_ids()
    if only is not None:
        usable &= only
    done = 0 if force else len(usable & store.predicted_ids(key))
    return len(usable) - done, done


def _decode_batches(
    pages: Iterator[list[dict]], batch_size: int, out: queue.Queue, stop: threading.Event
) -> None:
    """Producer thread: decode images into batches; bad files travel as error rows."""
    try:
        batch: list[tuple[dict, np.ndarray | None, str | None]] = []
        for page in pages:
            for row in page:
                if stop.is_set():
                    return
                try:
                    batch.append((row, decode(row["path"]).pixels, None))
                except ImageDecodeError as exc:
                    batch.append((row, None, str(exc)))
                if sum(1 for _, px, _ in batch if px is not None) >= batch_size:
                    out.put(batch)
                    batch = []
        if batch:
            out.put(batch)
    except BaseException as exc:  # surface producer failures in the consumer  # noqa: BLE001
        out.put(exc)
    finally:
        out.put(_DONE)


def run_proposals(
    store: Store,
    image_root: Path,
    mapper: BatchMapper,
    class_ids: list[int],
    settings: ProposerSettings,
    key: str,
    force: bool = False,
    advance: Callable[[int], None] | None = None,
    prefetch: int = 2,
    image_ids: Iterable[int] | None = None,
) -> ProposeSummary:
    """Propose every pending image (or only ``image_ids``); ``class_ids`` maps ontology class
    index -> store class id."""
    only = None if image_ids is None else frozenset(image_ids)
    todo, already = count_pending(store, key, force, only)
    summary = ProposeSummary(todo=todo, skipped=already)
    remap = np.asarray(class_ids, dtype=int)
    batches: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    reader = Store.open(store.path)  # the producer thread reads through its own connection
    producer = threading.Thread(
        target=_decode_batches,
        args=(pending_rows(reader, image_root, key, force, only), settings.batch_size, batches, stop),
        daemon=True,
        name="autolabel-decode",
    )
    started = time.perf_counter()
    producer.start()
    try:
        while (item := batches.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            _label_batch(store, mapper, item, remap, key, summary)
            if advance:
                advance(len(item))
            if summary.proposed == 0 and len(summary.model_errors) >= 2 * settings.batch_size:
                reason = summary.model_errors[0][1]
                raise AutolabelError(f"the model failed on every image so far ({reason}); stopping")
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                batches.get_nowait()
            except queue.Empty:
                producer.join(timeout=0.1)
        reader.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _label_batch(store, mapper, batch, remap, key, summary) -> None:
    good = [(row, px) for row, px, err in batch if err is None]
    for row, _, err in batch:
        if err is not None:
            store.mark_error(row["id"], err)
            summary.decode_errors.append((row["rel"], err))
    results = mapper.label_decoded([r for r, _ in good], [px for _, px in good], {}, [r for r, _ in good])
    by_id = {row["id"]: row["rel"] for row, _ in good}
    _record(store, results, by_id.__getitem__, remap, key, mapper.model_version, summary)


def _record(store, results, rel_of, remap, key, model_version, summary) -> None:
    """Commit one batch of result rows: predictions (or a model error) per image, in one transaction."""
    records = []
    for result in results:
        if result.get("unreadable"):  # decoded in a worker (another engine): the file is bad
            store.mark_error(result["id"], result["error"])
            summary.decode_errors.append((rel_of(result["id"]), result["error"]))
            continue
        if result["error"] is not None:
            summary.model_errors.append((rel_of(result["id"]), result["error"]))
            records.append((result["id"], key, model_version, "{}", result["error"]))
            continue
        det = dets.from_dict(result["detections"])
        if len(det):
            det.class_id = remap[det.class_id]
        summary.boxes_per_class.update(int(c) for c in det.class_id)
        summary.proposed += 1
        records.append((result["id"], key, model_version, dets.to_json(det), None))
    store.save_predictions(records)


def run_proposals_on(
    engine: Engine,
    factory: Callable[[], BatchMapper],
    store: Store,
    image_root: Path,
    class_ids: list[int],
    settings: ProposerSettings,
    key: str,
    model_version: str,
    force: bool = False,
    advance: Callable[[int], None] | None = None,
    image_ids: Iterable[int] | None = None,
    commit_every: int = 64,
) -> ProposeSummary:
    """``run_proposals`` on another engine (Ray): the workers decode and label, results stream
    back and are committed every ``commit_every`` images, so a rerun proposes only what is missing."""
    only = None if image_ids is None else frozenset(image_ids)
    todo, already = count_pending(store, key, force, only)
    summary = ProposeSummary(todo=todo, skipped=already)
    remap = np.asarray(class_ids, dtype=int)
    reader = Store.open(store.path)  # pending rows are read lazily while results are written

    def rel_of(image_id: int) -> str:
        found = store.images(ids=[image_id])
        return found[0].path if found else str(image_id)

    started = time.perf_counter()
    try:
        pending: list[dict] = []
        rows = pending_rows(reader, image_root, key, force, only)
        for result in engine.map(factory, rows, batch_size=settings.batch_size, advance=advance):
            pending.append(result)
            if len(pending) >= commit_every:
                _record(store, pending, rel_of, remap, key, model_version, summary)
                pending = []
        if pending:
            _record(store, pending, rel_of, remap, key, model_version, summary)
    finally:
        reader.close()
    summary.seconds = time.perf_counter() - started
    return summary


def propose_on(
    engine: Engine,
    build: Callable[[], object],
    mapper: BatchMapper,
    store: Store,
    image_root: Path,
    class_ids: list[int],
    settings: ProposerSettings,
    key: str,
    force: bool = False,
    advance: Callable[[int], None] | None = None,
    image_ids: Iterable[int] | None = None,
) -> ProposeSummary:
    """Propose on ``engine``: locally with ``mapper`` (already loaded, decoding in a background
    thread); elsewhere each worker builds its own proposer with ``build`` (``mapper`` then only
    fingerprinted the model)."""
    if engine.name == "local":
        return run_proposals(
            store, image_root, mapper, class_ids, settings, key, force, advance, image_ids=image_ids
        )
    factory = partial(BatchMapper, build)
    return run_proposals_on(
        engine, factory, store, image_root, class_ids, settings, key, mapper.model_version, force, advance,
        image_ids,
    )  # fmt: skip
