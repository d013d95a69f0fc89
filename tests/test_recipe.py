"""Loop recipes: the shipped default loads, overrides apply, bad values are one-line errors."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from typer.testing import CliRunner

from autolabel.errors import AutolabelError
from autolabel.recipe import Recipe, ScoreKey, load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_recipe_loads_with_its_documented_score():
    recipe = load_recipe(REPO / "loop" / "default.yaml")
    assert recipe.strategy == "hybrid" and recipe.score == "entropy_sum"


def test_score_keys_are_exactly_what_the_pool_scorer_writes():
    from autolabel.sampling.uncertainty import CLASS_PROBS_KEY, image_scores

    det = sv.Detections(
        xyxy=np.array([[0, 0, 10, 10], [20, 20, 40, 40]], float), confidence=np.array([0.9, 0.4]),
        class_id=np.array([0, 1]), data={CLASS_PROBS_KEY: np.array([[0.9, 0.1], [0.4, 0.6]])},
    )  # fmt: skip
    written = set(image_scores(det, det, width=64)) - {"boxes"}
    assert written == set(typing.get_args(ScoreKey))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"score": "entropy_mean"}, {"score": "entropy_mean", "strategy": "hybrid"}),
        ({"strategy": "uncertainty", "score": None}, {"score": "entropy_sum", "strategy": "uncertainty"}),
        ({"budget": 7}, {"budget": 7, "initial_budget": 7}),
    ],
)
def test_overrides(overrides, expected):
    recipe = Recipe().with_overrides(**overrides)
    assert {k: getattr(recipe, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"score": "bogus"}, "--score: Input should be"), ({"strategy": "best"}, "--strategy: Input should be")],
)
def test_bad_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(AutolabelError, match=message) as info:
        Recipe().with_overrides(**overrides)
    assert "\n" not in str(info.value)


def test_cli_bad_score_is_one_line_exit_2(tmp_path):
    from PIL import Image

    from autolabel.cli.app import app

    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    init = CliRunner().invoke(
        app, ["init", "--images", str(tmp_path / "images"), "--workspace", str(tmp_path)]
    )
    assert init.exit_code == 0, init.output
    result = CliRunner().invoke(
        app, ["select", "--recipe", str(REPO / "loop" / "default.yaml"), "--score", "bogus", "--no-push",
              "--workspace", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "--score" in result.output and "Traceback" not in result.output
