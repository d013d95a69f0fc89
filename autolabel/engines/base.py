"""The engine seam: map rows of ``{id, path}`` through a mapper that a factory builds once per worker.

A mapper is anything with ``map_rows(rows) -> result rows`` (``proposers.base.BatchMapper``,
``sampling.scorer.PoolScorer``): it decodes, runs its model and turns a bad file or a failing
batch into error rows, so an engine only moves rows. ``LocalEngine`` runs it in this process;
``engines.ray.RayEngine`` on a Ray actor pool. Both yield one result row per input id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol


class RowMapper(Protocol):
    def map_rows(self, rows: Sequence[dict]) -> list[dict]: ...


class Engine(Protocol):
    name: str

    def map(
        self,
        factory: Callable[[], RowMapper],
        pages: Iterable[Sequence[dict]],
        *,
        batch_size: int,
        advance: Callable[[int], None] | None = None,
    ) -> Iterator[dict]:
        """Result rows for every input row (order not guaranteed); ``advance(n)`` after each batch."""
        ...

    def close(self) -> None:
        """Release workers and connections (a no-op where there are none)."""
        ...


class LocalEngine:
    """In this process: one mapper, batches in order."""

    name = "local"

    def map(
        self,
        factory: Callable[[], RowMapper],
        pages: Iterable[Sequence[dict]],
        *,
        batch_size: int,
        advance: Callable[[int], None] | None = None,
    ) -> Iterator[dict]:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        mapper = factory()
        batch: list[dict] = []
        for page in pages:
            for row in page:
                batch.append(row)
                if len(batch) == batch_size:
                    yield from _run(mapper, batch, advance)
                    batch = []
        if batch:
            yield from _run(mapper, batch, advance)

    def close(self) -> None:
        pass


def _run(mapper: RowMapper, batch: list[dict], advance) -> list[dict]:
    mapped = mapper.map_rows(batch)
    if advance is not None:
        advance(len(batch))
    return mapped
