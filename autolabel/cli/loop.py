from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import (
    CpusPerWorkerOption,
    EngineOption,
    GpusPerWorkerOption,
    RayAddressOption,
    StudentOption,
    WorkersOption,
    WorkspaceOption,
    console,
    engine_config,
    open_workspace,
)

RecipeOption = Annotated[Path, typer.Option("--recipe", help="Loop recipe YAML (how to iterate).")]
StrategyOption = Annotated[str | None, typer.Option(help="random | uncertainty | diversity | hybrid")]
ScoreOption = Annotated[
    str | None, typer.Option(help="Uncertainty that ranks the pool, e.g. entropy_sum, entropy_mean.")
]
BatchSizeOption = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Images per model call in pool scoring (default 8).")
]


def _context(workspace, recipe_path, overrides, annotator, labels, miss_rate, jitter, prompts, engine_flags):
    from autolabel.engines import make_engine
    from autolabel.errors import AutolabelError
    from autolabel.loop_steps import RoundContext
    from autolabel.ontology import Ontology
    from autolabel.recipe import load_recipe

    ws = open_workspace(workspace)
    recipe = load_recipe(recipe_path).with_overrides(**overrides)
    engine = engine_config(recipe.engine or ws.config.engine, **engine_flags)
    runner = make_engine(engine, ws.root)  # a missing ray extra fails here, before any work
    if annotator not in ("human", "replay"):
        raise AutolabelError(f"--annotator must be 'human' or 'replay', got '{annotator}'")
    noise = None
    if annotator == "replay":
        if labels is None:
            raise AutolabelError(
                "--annotator replay needs --labels DIR (YOLO ground truth: labels/ + data.yaml)"
            )
        if not labels.is_dir():
            raise AutolabelError(f"ground-truth folder not found: {labels}")
        from autolabel.studio.replay import Noise

        noise = Noise(miss_rate=miss_rate, jitter=jitter, seed=recipe.seed)
    ontology_path = prompts or ws.ontology_path()
    ontology = Ontology.load(ontology_path) if ontology_path else None
    out = console()
    store = ws.open_store()
    if ontology is not None:
        store.ensure_classes(ontology.names)
    ctx = RoundContext(
        store=store,
        recipe=recipe,
        log=lambda m: out.print(m),
        workspace=ws,
        ontology=ontology,
        annotator=annotator,
        labels_dir=labels,
        noise=noise,
        engine=runner,
        batch_size=engine.batch_size or 8,
    )
    return ctx, out


def loop(
    workspace: WorkspaceOption = Path("."),
    recipe: RecipeOption = Path("loop/default.yaml"),
    rounds: Annotated[int | None, typer.Option(min=1)] = None,
    budget: Annotated[int | None, typer.Option(min=1)] = None,
    strategy: StrategyOption = None,
    score: ScoreOption = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    imgsz: Annotated[int | None, typer.Option(min=32)] = None,
    student: StudentOption = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="The student's starting weights (default: the recipe's train.model)."),
    ] = None,
    annotator: Annotated[
        str, typer.Option(help="human (Label Studio users) | replay (answers from --labels)")
    ] = "human",
    labels: Annotated[
        Path | None, typer.Option(help="Ground-truth YOLO folder for --annotator replay.")
    ] = None,
    miss_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Replay noise: share of boxes the annotator misses.")
    ] = 0.0,
    jitter: Annotated[
        float, typer.Option(min=0, help="Replay noise: box jitter, fraction of box size.")
    ] = 0.0,
    prompts: Annotated[
        Path | None, typer.Option(help="Ontology for round-0 pre-labels (default: the workspace's).")
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never download missing official student weights.")
    ] = False,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    workers: WorkersOption = None,
    gpus_per_worker: GpusPerWorkerOption = None,
    cpus_per_worker: CpusPerWorkerOption = None,
    batch_size: BatchSizeOption = None,
) -> None:
    """Run active-learning rounds until validation mAP plateaus (resumable: rerun the same command)."""
    from autolabel.loop import run_loop
    from autolabel.loop_steps import round_steps

    overrides = {
        "rounds": rounds, "budget": budget, "strategy": strategy, "score": score, "epochs": epochs, "imgsz": imgsz,
        "offline": offline or None, "student": student, "model": model,
    }  # fmt: skip
    flags = _engine_flags(engine, ray_address, workers, gpus_per_worker, cpus_per_worker, batch_size)
    ctx, out = _context(workspace, recipe, overrides, annotator, labels, miss_rate, jitter, prompts, flags)
    with ctx.store, closing(ctx.engine):
        outcome = run_loop(ctx, round_steps())
    out.print(f"stopped: {outcome.stop_reason}")
    for h in outcome.history:
        out.print(
            f"round {h['round']}: {h.get('labels')} labeled images, mAP50-95 {_fmt(h.get('map50_95'))}, "
            f"mAP50 {_fmt(h.get('map50'))}, F1 {_fmt(h.get('f1'))}"
        )
    if outcome.best_round is not None:
        out.print(f"best round: {outcome.best_round} (its student is the one 'autolabel export' picks)")


def select_batch(
    workspace: WorkspaceOption = Path("."),
    recipe: RecipeOption = Path("loop/default.yaml"),
    budget: Annotated[int | None, typer.Option(min=1)] = None,
    strategy: StrategyOption = None,
    score: ScoreOption = None,
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push the batch to Label Studio.")] = True,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    workers: WorkersOption = None,
    gpus_per_worker: GpusPerWorkerOption = None,
    cpus_per_worker: CpusPerWorkerOption = None,
    batch_size: BatchSizeOption = None,
) -> None:
    """Pick the next batch for human review, pre-label it with the student, push it to Label Studio."""
    from autolabel.loop import batch_ids, ensure_loop_schema, run_steps_once
    from autolabel.loop_steps import step_prelabel, step_push, step_select

    overrides = {"budget": budget, "strategy": strategy, "score": score}
    flags = _engine_flags(engine, ray_address, workers, gpus_per_worker, cpus_per_worker, batch_size)
    ctx, out = _context(workspace, recipe, overrides, "human", None, 0.0, 0.0, None, flags)
    with ctx.store as store, closing(ctx.engine):
        ensure_loop_schema(store)
        steps = [("select", step_select), ("prelabel", step_prelabel)] + (
            [("push", step_push)] if push else []
        )
        round_index = run_steps_once(ctx, steps)
        ids = batch_ids(store, round_index)
        images = {im.id: im.path for im in store.images(ids=ids)}
        out.print(f"round {round_index}: {len(ids)} images selected" + (" and pushed" if push else ""))
        for image_id in ids[:20]:
            out.print(f"  {images[image_id]}")
        if len(ids) > 20:
            out.print(f"  ... and {len(ids) - 20} more")


def _engine_flags(engine, ray_address, workers, gpus_per_worker, cpus_per_worker, batch_size) -> dict:
    """The engine flags by their ``EngineConfig`` names (None: the recipe's or workspace's value)."""
    return {
        "kind": engine, "ray_address": ray_address, "workers": workers, "gpus_per_worker": gpus_per_worker,
        "cpus_per_worker": cpus_per_worker, "batch_size": batch_size,
    }  # fmt: skip


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
