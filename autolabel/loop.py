"""Round orchestration: select -> pre-label -> push -> wait -> pull -> split -> train -> eval -> stop?

Every step writes its intent ('started') and its result ('done', with a JSON result) to SQLite
before the next one begins, so ``kill -9`` at any moment followed by the same command resumes at
the first unfinished step of the current round. Steps themselves are idempotent (selection reuses
a recorded batch, push/pull are idempotent, a finished training is never repeated), so a step that
was interrupted half-way is simply run again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autolabel.recipe import Recipe
from autolabel.store import Store

LOOP_SCHEMA = """
CREATE TABLE IF NOT EXISTS loop_steps (
    round INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,            -- started | done
    result TEXT,                     -- JSON
    updated_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (round, step)
);
CREATE TABLE IF NOT EXISTS loop_batches (
    round INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    rank INTEGER NOT NULL,
    PRIMARY KEY (round, image_id)
);
CREATE TABLE IF NOT EXISTS loop_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

StepFn = Callable[["LoopContext", int], dict]


@dataclass(frozen=True)
class LoopContext:
    """What the orchestration needs; the real steps get a ``loop_steps.RoundContext`` (a subclass
    with the workspace and the annotator), resolved once by the caller."""

    store: Store
    recipe: Recipe
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class LoopOutcome:
    rounds_done: int
    stop_reason: str
    best_round: int | None
    history: list[dict]


def ensure_loop_schema(store: Store) -> None:
    store.ensure_schema(LOOP_SCHEMA)


def step_status(store: Store, round_index: int, step: str) -> tuple[str | None, dict | None]:
    row = store.conn.execute(
        "SELECT status, result FROM loop_steps WHERE round = ? AND step = ?", (round_index, step)
    ).fetchone()
    if row is None:
        return None, None
    return row[0], json.loads(row[1]) if row[1] else None


def _mark(store: Store, round_index: int, step: str, status: str, result: dict | None) -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO loop_steps(round, step, status, result) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(round, step) DO UPDATE SET status = excluded.status, result = excluded.result,"
            " updated_at = datetime('now')",
            (round_index, step, status, None if result is None else json.dumps(result)),
        )


def loop_started(store: Store) -> bool:
    """Whether this workspace ever ran a loop step (its tables exist), without creating them."""
    row = store.conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'loop_steps'"
    ).fetchone()
    return row is not None


def step_results(store: Store, step: str) -> list[tuple[int, dict]]:
    """(round, result) of every finished ``step``, by round."""
    rows = store.conn.execute(
        "SELECT round, result FROM loop_steps WHERE step = ? AND status = 'done' ORDER BY round", (step,)
    )
    return [(r, json.loads(result) or {}) for r, result in rows]


def batch_ids(store: Store, round_index: int) -> list[int]:
    """The images the loop selected in a round, best first."""
    rows = store.conn.execute(
        "SELECT image_id FROM loop_batches WHERE round = ? ORDER BY rank", (round_index,)
    )
    return [r[0] for r in rows]


def record_batch(store: Store, round_index: int, image_ids: Sequence[int]) -> None:
    """Persist a round's selection (in rank order) before anything acts on it; a rerun keeps it."""
    with store.transaction():
        for rank, image_id in enumerate(image_ids):
            store.conn.execute(
                "INSERT OR IGNORE INTO loop_batches(round, image_id, rank) VALUES (?, ?, ?)",
                (round_index, image_id, rank),
            )


def batched_image_ids(store: Store) -> set[int]:
    """Every image some round selected."""
    return {r[0] for r in store.conn.execute("SELECT image_id FROM loop_batches")}


def batch_rounds(store: Store) -> dict[int, list[int]]:
    """round -> the image ids selected in it (rank order), for every round with a batch."""
    out: dict[int, list[int]] = {}
    for rnd, image_id in store.conn.execute("SELECT round, image_id FROM loop_batches ORDER BY round, rank"):
        out.setdefault(rnd, []).append(image_id)
    return out


def get_state(store: Store, key: str, default: str | None = None) -> str | None:
    row = store.conn.execute("SELECT value FROM loop_state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


def set_state(store: Store, key: str, value: str) -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO loop_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def round_history(store: Store) -> list[dict]:
    """Per finished round: the result of its 'eval' step plus the round number."""
    return [{"round": r, **result} for r, result in step_results(store, "eval")]


def plateau_reached(history: Sequence[dict], patience: int, min_delta: float, key: str = "map50_95") -> bool:
    """True when the last ``patience`` rounds all failed to beat the best earlier score by ``min_delta``."""
    scores = [h[key] for h in history if h.get(key) is not None]
    if len(scores) <= patience:
        return False
    best_before = max(scores[:-patience])
    return all(s - best_before <= min_delta for s in scores[-patience:])


def best_round(history: Sequence[dict], key: str = "map50_95") -> int | None:
    scored = [h for h in history if h.get(key) is not None]
    if not scored:
        return None
    return max(scored, key=lambda h: (h[key], -h["round"]))["round"]


def run_loop(ctx: LoopContext, steps: Sequence[tuple[str, StepFn]]) -> LoopOutcome:
    """Run rounds until the recipe's plateau rule, its round limit, or an empty pool stops them."""
    store, recipe = ctx.store, ctx.recipe
    ensure_loop_schema(store)
    stop_reason = get_state(store, "stop_reason")
    while stop_reason is None:
        round_index = int(store.get_meta("round", "0"))
        for name, fn in steps:
            status, result = step_status(store, round_index, name)
            if status == "done":
                continue
            ctx.log(f"round {round_index}: {name}" + (" (resuming)" if status == "started" else ""))
            _mark(store, round_index, name, "started", None)
            result = fn(ctx, round_index) or {}
            _mark(store, round_index, name, "done", result)
            if result.get("stop"):
                stop_reason = result["stop"]
                break
        history = round_history(store)
        if stop_reason is None:
            if plateau_reached(history, recipe.plateau.patience, recipe.plateau.min_delta):
                stop_reason = (
                    f"plateau: mAP50-95 did not improve by {recipe.plateau.min_delta} "
                    f"in {recipe.plateau.patience} rounds"
                )
            elif round_index + 1 >= recipe.rounds:
                stop_reason = f"round limit ({recipe.rounds}) reached"
        if stop_reason is not None:
            set_state(store, "stop_reason", stop_reason)
            best = best_round(history)
            if best is not None:
                set_state(store, "best_round", str(best))
            break
        store.set_meta("round", str(round_index + 1))
    history = round_history(store)
    best = get_state(store, "best_round")
    return LoopOutcome(
        rounds_done=len(history),
        stop_reason=stop_reason,
        best_round=None if best is None else int(best),
        history=history,
    )


def run_steps_once(ctx: LoopContext, steps: Sequence[tuple[str, StepFn]]) -> int:
    """Run the given steps of the current round (skipping those already done); return the round."""
    ensure_loop_schema(ctx.store)
    round_index = int(ctx.store.get_meta("round", "0"))
    for name, fn in steps:
        status, _ = step_status(ctx.store, round_index, name)
        if status == "done":
            continue
        _mark(ctx.store, round_index, name, "started", None)
        _mark(ctx.store, round_index, name, "done", fn(ctx, round_index) or {})
    return round_index
