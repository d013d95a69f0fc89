"""Loop recipes (``loop/*.yaml``): how to iterate. Any value can be overridden on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autolabel.config import EngineConfig, StudentConfig, describe_validation_error
from autolabel.errors import AutolabelError, read_text


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlateauRule(_Section):
    """Stop when frozen-val mAP50-95 has not improved by ``min_delta`` for ``patience`` rounds."""

    patience: int = Field(default=2, ge=1)
    min_delta: float = Field(default=0.005, ge=0)


class LoopTrain(StudentConfig):
    """A recipe's ``train:``: the student's fields with a round's defaults (shorter, smaller than a
    single ``autolabel train``); patience and mosaic follow from the epochs (``loop_steps.step_train``)."""

    epochs: int = Field(default=30, gt=0)
    imgsz: int = Field(default=320, gt=0)
    batch: int = Field(default=16, gt=0)
    warm_start: bool = True  # start each round from the previous round's student (no LR warm-up)
    offline: bool = False  # never fetch missing official weights; train from scratch instead


# The per-image uncertainty scores the pool scorer writes (autolabel.sampling.uncertainty.image_scores):
# {method}_{aggregation}, and the flip instability. '_sum' ranks images with many unsure boxes first
# (more boxes to correct per image); '_mean' and '_max' do not grow with the number of boxes.
ScoreKey = Literal[
    "least_confidence_max", "least_confidence_mean", "least_confidence_sum",
    "margin_max", "margin_mean", "margin_sum",
    "entropy_max", "entropy_mean", "entropy_sum",
    "instability",
]  # fmt: skip


class Recipe(_Section):
    rounds: int = Field(default=6, ge=1)
    budget: int = Field(default=50, ge=1)  # images sent for review per round
    initial_budget: int | None = Field(default=None, ge=1)  # round 0; defaults to budget
    strategy: Literal["random", "uncertainty", "diversity", "hybrid"] = "hybrid"
    score: ScoreKey = "entropy_sum"  # the uncertainty that ranks the pool (uncertainty, hybrid)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    poll_seconds: float = Field(default=10.0, gt=0)
    plateau: PlateauRule = PlateauRule()
    train: LoopTrain = LoopTrain()
    engine: EngineConfig | None = None  # None: the workspace's (autolabel.yaml ``engine:``)

    def with_overrides(self, **values) -> Recipe:
        """CLI overrides: ``rounds``, ``budget``, ``strategy``, ``score``, ``epochs``, ``imgsz``, ``student``,
        ``model`` (None = keep)."""
        data = self.model_dump()
        if values.get("budget") is not None and values.get("initial_budget") is None:
            values = {**values, "initial_budget": values["budget"]}  # --budget alone sets every round
        for key, value in values.items():
            if value is None:
                continue
            if key in ("epochs", "imgsz", "offline", "student", "model"):
                data["train"][key] = value
            else:
                data[key] = value
        try:
            return Recipe.model_validate(data)
        except ValidationError as exc:
            raise AutolabelError(f"--{describe_validation_error(exc)}") from None


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise AutolabelError(f"recipe not found: {path}")
    try:
        return Recipe.model_validate(yaml.safe_load(read_text(path, "recipe")) or {})
    except yaml.YAMLError as exc:
        raise AutolabelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        raise AutolabelError(f"{path}: {describe_validation_error(exc)}") from None
