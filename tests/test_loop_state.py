"""The round state machine with recorded stand-in steps (the unit under test is the orchestration)."""

import pytest

from autolabel.loop import LoopContext, best_round, plateau_reached, run_loop, step_status
from autolabel.recipe import Recipe
from autolabel.store import Store


@pytest.mark.parametrize(
    "scores, patience, min_delta, expected",
    [
        ([0.1, 0.2, 0.3], 2, 0.0, False),
        ([0.1, 0.3, 0.3, 0.3], 2, 0.0, True),
        ([0.1, 0.3, 0.301, 0.302], 2, 0.005, True),
        ([0.1, 0.3, 0.2, 0.31], 2, 0.005, False),
        ([0.3], 1, 0.0, False),
        ([0.3, 0.2], 1, 0.0, True),
    ],
)
def test_plateau_rule(scores, patience, min_delta, expected):
    history = [{"round": i, "map50_95": s} for i, s in enumerate(scores)]
    assert plateau_reached(history, patience, min_delta) is expected


def test_best_round_prefers_earliest_tie():
    assert (
        best_round(
            [{"round": 0, "map50_95": 0.2}, {"round": 1, "map50_95": 0.4}, {"round": 2, "map50_95": 0.4}]
        )
        == 1
    )


class Recorder:
    def __init__(self, scores, crash_at=None):
        self.calls = []
        self.scores = scores
        self.crash_at = crash_at

    def step(self, name):
        def fn(ctx, round_index):
            self.calls.append((round_index, name))
            if (round_index, name) == self.crash_at:
                self.crash_at = None
                raise KeyboardInterrupt
            if name == "eval":
                return {"map50_95": self.scores[round_index]}
            return {"ok": True}

        return name, fn


def _steps(rec):
    return [rec.step(n) for n in ("select", "train", "eval")]


def test_rounds_run_until_plateau_and_pick_best(tmp_path):
    store = Store.open(tmp_path / "s.db")
    rec = Recorder([0.1, 0.3, 0.29, 0.3, 0.9])
    outcome = run_loop(
        LoopContext(store, Recipe(rounds=10, plateau={"patience": 2, "min_delta": 0.01}), log=lambda m: None),
        _steps(rec),
    )
    assert outcome.rounds_done == 4
    assert outcome.best_round == 1
    assert outcome.stop_reason.startswith("plateau")
    assert [c for c in rec.calls if c[1] == "train"] == [
        (0, "train"),
        (1, "train"),
        (2, "train"),
        (3, "train"),
    ]


def test_crash_mid_round_resumes_at_the_unfinished_step(tmp_path):
    store = Store.open(tmp_path / "s.db")
    rec = Recorder([0.1, 0.2, 0.3], crash_at=(1, "train"))
    ctx = LoopContext(store, Recipe(rounds=3), log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        run_loop(ctx, _steps(rec))
    assert step_status(store, 1, "select")[0] == "done"
    assert step_status(store, 1, "train")[0] == "started"
    outcome = run_loop(ctx, _steps(rec))
    # select of round 1 ran once; train of round 1 ran twice (interrupted, then again); nothing else repeated
    assert rec.calls.count((1, "select")) == 1
    assert rec.calls.count((1, "train")) == 2
    assert rec.calls.count((0, "train")) == 1
    assert outcome.stop_reason == "round limit (3) reached"
    assert outcome.best_round == 2
    # a rerun after the stop does nothing
    before = list(rec.calls)
    run_loop(ctx, _steps(rec))
    assert rec.calls == before


def test_a_step_can_stop_the_loop(tmp_path):
    store = Store.open(tmp_path / "s.db")

    def select(ctx, r):
        return {"stop": "pool exhausted"} if r == 1 else {"n": 5}

    outcome = run_loop(
        LoopContext(store, Recipe(rounds=5), log=lambda m: None),
        [("select", select), ("eval", lambda ctx, r: {"map50_95": 0.5})],
    )
    assert outcome.stop_reason == "pool exhausted"
    assert outcome.rounds_done == 1
