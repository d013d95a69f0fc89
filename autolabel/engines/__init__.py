"""Where the heavy, parallel work runs: in this process (``local``) or on a Ray cluster (``ray``).

Both map the same row mappers (``proposers.base.BatchMapper``, ``sampling.scorer.PoolScorer``):
rows of ``{id, path}`` in, one result row per id out, the model built once per worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autolabel.engines.base import Engine, LocalEngine

if TYPE_CHECKING:
    from autolabel.config import EngineConfig


def make_engine(config: EngineConfig, workspace_root: Path) -> Engine:
    """The engine ``config.kind`` names; ``ray`` without the extra is a one-line install hint."""
    if config.kind == "local":
        return LocalEngine()
    from autolabel.engines.ray import RayEngine, require_ray

    require_ray()
    return RayEngine(config, workspace_root)
