"""The Ray engine: the same row mappers the local engine runs, over a Ray Data actor pool.

The driver streams the ``{id, path}`` rows it reads from the store into the object store in
chunks (``from_arrow_refs``), so neither the driver nor Ray holds a Python list of the whole job;
``map_batches`` runs them through an actor pool whose actors build the mapper once (the same
``BatchMapper`` or ``PoolScorer`` class the local engine uses) and decode inside the actor (a bad
file is an error row, never a failed job); the driver iterates the results as they come and
commits them. Ray Data restarts a killed actor and retries its batch (``max_restarts`` and
``max_task_retries`` default to -1 for actor pools); results are keyed by id, so a retried
batch can never store an image twice.

Every result travels in one fixed Arrow schema (``_schema``): detections and scores as JSON
text (empty detections included), embeddings as float32 bytes, an error string or null, and
whether the file could not be read.

Hygiene: a local cluster started here has no dashboard, no usage stats, Ray's token
authentication on with a token of its own (one per user, 0600, in the system temp dir), its
temp dir (sockets, logs)
owner-only under the system temp dir and never ``$HOME``, and Ray's own log lines go to that
folder, not the terminal. Ray 2.60's core servers listen on every interface and rewrite a
loopback node address to the machine's (``services.resolve_ip_for_localhost``), so binding to
127.0.0.1 alone is not possible; the token is what keeps other hosts out.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.config import EngineConfig
from autolabel.engines.base import RowMapper
from autolabel.errors import AutolabelError, missing_dependency

# An input block is one task on one actor (the actor batches inside it), so blocks must be
# small for the pool to share the work: this many batches a block.
BATCHES_PER_BLOCK = 4
# the driver's own environment choices that workers on other nodes should share
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "YOLO_OFFLINE",
    "YOLO_AUTOINSTALL",
    "YOLO_VERBOSE",
    "HF_HUB_DISABLE_TELEMETRY",
    "TOKENIZERS_PARALLELISM",
    "AUTOLABEL_USER_OFFLINE",
)


def pool_size(config: EngineConfig, cluster_cpus: float) -> tuple[int, int]:
    """The actor pool's (min, max) for ``config.workers`` on a cluster with ``cluster_cpus``."""
    low, high = parse_workers(config.workers)
    fits = max(1, int(cluster_cpus // config.cpus_per_worker))
    high = high or fits
    return min(low, high), high


def parse_workers(text: str) -> tuple[int, int | None]:
    """``"4"`` -> (4, 4); ``"1:8"`` -> (1, 8); ``"2:"`` -> (2, None = as many as fit)."""
    low, sep, high = text.partition(":")
    try:
        lo = int(low) if low else 1
        hi = (int(high) if high else None) if sep else lo
    except ValueError:
        raise AutolabelError(f"--workers must look like 4 or 1:8, got '{text}'") from None
    if lo < 1 or (hi is not None and hi < lo):
        raise AutolabelError(f"--workers must look like 4 or 1:8 with 1 <= MIN <= MAX, got '{text}'")
    return lo, hi


def require_ray() -> None:
    """Fail early, in one line, when the ray extra is missing (before any work starts)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        raise _missing()


def _missing():
    return missing_dependency(
        "ray[data]",
        "--engine ray needs Ray Data: pip install 'autolabel-loop[ray]' (or pip install 'ray[data]')",
    )


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise _missing() from None
    return ray


def local_temp_dir(workspace_root: Path) -> Path:
    """A short per-workspace folder in the system temp dir (Ray's unix sockets need short paths)."""
    digest = hashlib.sha256(str(Path(workspace_root).resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"autolabel-ray-{os.getuid()}-{digest}"


@dataclass
class Connection:
    """This process's link to a Ray cluster; ``close`` stops a local cluster it started."""

    ray: Any
    log: Path
    temp: Path | None  # the private local cluster's folder; None when joined to an existing one
    owned: bool

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            with _stderr_to(self.log):
                self.ray.shutdown()
        if self.temp is not None and self.temp.exists():
            os.chmod(self.temp, 0o700)
        self.owned = False


def connect(config: EngineConfig, workspace_root: Path) -> Connection:
    """Join the cluster at ``config.ray_address``, or start a private local one."""
    # Ray reads these when it is imported
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    folder = local_temp_dir(workspace_root)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = None if config.ray_address else folder
    log = folder / "driver.log"
    if temp is not None:
        _private_token()
    ray = _ray()
    if ray.is_initialized():  # a caller (a test, a notebook) already connected: use it as it is
        return Connection(ray=ray, log=log, temp=None, owned=False)
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if config.ray_address:
        kwargs["address"] = config.ray_address
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        kwargs["runtime_env"] = {"env_vars": env} if env else None
    else:
        kwargs["_temp_dir"] = str(temp)
    _quiet_ray_loggers()
    with _stderr_to(log):
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise AutolabelError(f"cannot reach the Ray cluster at {config.ray_address}: {exc}") from None
    if temp is not None:
        os.chmod(temp, 0o700)  # Ray opens its temp dir to everyone (0777); this one is private
    return Connection(ray=ray, log=log, temp=temp, owned=True)


def _private_token() -> None:
    """Token auth for local clusters: one token per user (Ray caches the first token a process
    reads), owner-only, in the system temp dir rather than ``~/.ray``."""
    token = Path(tempfile.gettempdir()) / f"autolabel-ray-{os.getuid()}.token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.chmod(token, 0o600)
    # Ray turns token auth on for a new local cluster itself (and refreshes its config when it
    # does); it finds the token here instead of creating ~/.ray/auth_token
    os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(token))


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Ray's C++ core writes straight to file descriptor 2 (e.g. an ERROR line per pooled actor
    about constructor arguments in the object store); while Ray runs, fd 2 goes to a log file.
    autolabel's own output (progress bars, summaries, one-line errors) is on stdout."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _quiet_ray_loggers() -> None:
    """Ray and Ray Data log INFO lines to stderr; keep the terminal for autolabel's own output."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("detections", pa.string()),
            ("scores", pa.string()),
            ("embedding", pa.binary()),
            ("error", pa.string()),
            ("unreadable", pa.bool_()),
        ]
    )


def to_arrow(results: Sequence[dict]):
    """Result rows (any mapper's) -> a table in ``RESULT_SCHEMA``."""
    import pyarrow as pa

    def text(value):
        return None if value is None else json.dumps(value, default=_json_default)

    columns = {
        "id": [int(r["id"]) for r in results],
        "detections": [text(r.get("detections")) for r in results],
        "scores": [text(r.get("scores")) for r in results],
        "embedding": [
            None if r.get("embedding") is None else np.asarray(r["embedding"], np.float32).tobytes()
            for r in results
        ],
        "error": [r.get("error") for r in results],
        "unreadable": [bool(r.get("unreadable")) for r in results],
    }
    return pa.table(columns, schema=_schema())


def from_arrow(table) -> Iterator[dict]:
    """The inverse of ``to_arrow``: one dict per row with every key of the schema (None when unset)."""
    for row in table.to_pylist():
        yield {
            "id": row["id"],
            "detections": None if row["detections"] is None else json.loads(row["detections"]),
            "scores": None if row["scores"] is None else json.loads(row["scores"]),
            "embedding": None if row["embedding"] is None else np.frombuffer(row["embedding"], np.float32),
            "error": row["error"],
            "unreadable": row["unreadable"],
        }


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _actor_class(factory: Callable[[], RowMapper]):
    """The actor class Ray Data pools. The factory travels in the class's closure (pickled once
    with the class), not as constructor arguments in the object store, so a restarted actor can
    always be rebuilt."""

    class AutolabelMapper:
        def __init__(self):
            self.mapper = factory()

        def __call__(self, batch):
            ids, paths = batch.column("id").to_pylist(), batch.column("path").to_pylist()
            rows = [{"id": i, "path": p} for i, p in zip(ids, paths, strict=True)]
            return to_arrow(self.mapper.map_rows(rows))

    return AutolabelMapper


def _chunks(pages: Iterable[Sequence[dict]], ray, rows_per_block: int) -> Iterator[Any]:
    """Object refs of ``{id, path}`` tables of ``rows_per_block`` rows (the last one shorter)."""
    import pyarrow as pa

    def put(block: list[dict]):
        ids = pa.array([int(row["id"]) for row in block], pa.int64())
        return ray.put(pa.table({"id": ids, "path": pa.array([str(row["path"]) for row in block])}))

    block: list[dict] = []
    for page in pages:
        for row in page:
            block.append(row)
            if len(block) == rows_per_block:
                yield put(block)
                block = []
    if block:
        yield put(block)


def map_rows(
    connection: Connection,
    factory: Callable[[], RowMapper],
    pages: Iterable[Sequence[dict]],
    config: EngineConfig,
    batch_size: int,
    advance: Callable[[int], None] | None = None,
) -> Iterator[dict]:
    """Map every row of ``pages`` through an actor pool; yields result rows as they arrive
    (in no particular order), one per input id."""
    from ray.data import ActorPoolStrategy, DataContext

    ray, log = connection.ray, connection.log

    # object refs only: the rows themselves sit in the object store
    refs = list(_chunks(pages, ray, max(1, batch_size * BATCHES_PER_BLOCK)))
    if not refs:
        return
    context = DataContext.get_current()
    context.enable_progress_bars = False  # autolabel shows its own bar
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    _quiet_ray_loggers()  # Ray Data sets its own logging up when it is first used
    lo, hi = pool_size(config, ray.cluster_resources().get("CPU", 1))
    dataset = ray.data.from_arrow_refs(refs).map_batches(
        _actor_class(factory),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=lo, max_size=hi),
        num_cpus=config.cpus_per_worker,
        num_gpus=config.gpus_per_worker or None,
    )
    batches = iter(dataset.iter_batches(batch_format="pyarrow", batch_size=None))
    while True:
        with _stderr_to(log):  # never while the caller runs (its errors must show)
            batch = next(batches, None)
        if batch is None:
            return
        rows = list(from_arrow(batch))
        yield from rows
        if advance is not None:
            advance(len(rows))


class RayEngine:
    """``Engine`` on Ray. The first ``map`` joins (or starts) the cluster; the connection stays
    for the process's later calls (a loop round scores and embeds several times) until ``close``
    or the process exits."""

    name = "ray"

    def __init__(self, config: EngineConfig, workspace_root: Path):
        parse_workers(config.workers)  # a bad MIN:MAX fails here, before Ray starts
        self.config = config
        self.workspace_root = Path(workspace_root)
        self._connection: Connection | None = None

    def map(
        self,
        factory: Callable[[], RowMapper],
        pages: Iterable[Sequence[dict]],
        *,
        batch_size: int,
        advance: Callable[[int], None] | None = None,
    ) -> Iterator[dict]:
        if self._connection is None:
            self._connection = connect(self.config, self.workspace_root)
            atexit.register(self.close)
        yield from map_rows(self._connection, factory, pages, self.config, batch_size, advance)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
