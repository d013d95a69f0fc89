"""The real steps of an active-learning round, wired from the library's parts.

select   -> the next batch (cold start: typicality over cheap image embeddings; then the student's
            uncertainty + diversity), persisted in ``loop_batches`` before anything else happens
prelabel -> the student's predictions for the batch (round 0: the open-vocabulary proposer when its
            weights are present; otherwise the batch goes to review without new pre-labels)
push     -> Label Studio tasks with those predictions (idempotent)
wait     -> the replay annotator answers, or humans do: pull until every batch image is done
split    -> newly labeled images join train or the frozen validation set by source group
train    -> the student, warm-started from the previous round's (a finished run is never repeated)
eval     -> the run's frozen-val metrics, labels so far and the estimated human time
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel import runs
from autolabel.engines.base import Engine, LocalEngine
from autolabel.errors import AutolabelError
from autolabel.loop import LoopContext, batch_ids, batched_image_ids, record_batch
from autolabel.store import Store

if TYPE_CHECKING:
    from autolabel.ontology import Ontology
    from autolabel.studio.client import StudioClient
    from autolabel.studio.replay import Noise
    from autolabel.workspace import Workspace


@dataclass(frozen=True, kw_only=True)
class RoundContext(LoopContext):
    """Everything the real steps work with, resolved once by the caller (the CLI, a benchmark, a test)."""

    workspace: Workspace
    ontology: Ontology | None = None  # for the round-0 open-vocabulary pre-labels
    annotator: str = "human"  # human | replay
    labels_dir: Path | None = None  # replay ground truth (YOLO layout)
    noise: Noise | None = None  # replay's sloppiness
    # The Label Studio client factory; None: the workspace's server, connected on first use.
    studio: Callable[[], StudioClient] | None = field(default=None, repr=False)
    # Where pre-labeling, pool scoring and embeddings run, and images per model call there.
    engine: Engine = field(default_factory=LocalEngine)
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.studio is None:
            object.__setattr__(self, "studio", connect_once(self.workspace, self.log))


def connect_once(workspace: Workspace, log: Callable[[str], None] = print) -> Callable[[], StudioClient]:
    """A client factory that connects to the workspace's Label Studio on its first call only,
    starting the workspace's local server when no server is configured or running."""

    @cache
    def studio() -> StudioClient:
        from autolabel.studio import server
        from autolabel.studio.client import connect

        started = server.ensure_local(workspace.studio_dir, workspace.image_root, workspace.config.studio)
        if started is not None:
            log(f"started the workspace's Label Studio at {started.url} (stop it: 'autolabel studio stop')")
        return connect(workspace)

    return studio


def _pool(store: Store):
    in_batches = batched_image_ids(store)
    labeled = set(store.labels())
    return [
        im
        for im in store.images(status=("unlabeled", "proposed"))
        if im.id not in in_batches and im.id not in labeled
    ]


def step_select(ctx: RoundContext, round_index: int) -> dict:
    from autolabel.sampling.select import resolve_strategy, select

    store, recipe = ctx.store, ctx.recipe
    existing = batch_ids(store, round_index)
    if existing:
        return {"n": len(existing), "reused": True}
    pool = _pool(store)
    if not pool:
        return {"stop": "pool exhausted: every image is labeled or in review"}
    budget = recipe.initial_budget if (round_index == 0 and recipe.initial_budget) else recipe.budget
    student = runs.latest_finished(store, weights_on_disk=True)
    ids = [im.id for im in pool]
    scores = embeddings = None
    labeled_embeddings = None
    if student is not None and recipe.strategy != "random":
        ids, scores, embeddings, labeled_embeddings = _score_with_student(ctx, pool, student)
    elif recipe.strategy != "random":
        pretrained = pretrained_weights(recipe.train.model, ctx.workspace, student=recipe.train.student)
        if pretrained is not None:
            ctx.log(f"cold start: embeddings from the backbone of {pretrained.name}")
            ids, embeddings, labeled_embeddings = _embed_with_weights(ctx, pool, pretrained)
        else:
            ids, embeddings, labeled_embeddings = _embed_pixels(ctx.workspace, store, pool)
    strategy, note = resolve_strategy(
        recipe.strategy, has_student=scores is not None, has_embeddings=embeddings is not None
    )
    if note:
        ctx.log(note)
    picked = select(
        strategy,
        budget,
        ids,
        scores=scores,
        embeddings=embeddings,
        labeled_embeddings=labeled_embeddings,
        seed=recipe.seed + round_index,
    )
    record_batch(store, round_index, picked)
    return {"n": len(picked), "strategy": strategy, "pool": len(pool), "note": note}


def pretrained_weights(model: str, workspace, student: str = "yolo") -> Path | None:
    """The configured student's pretrained weights when they are on disk (no download here)."""
    from autolabel import students
    from autolabel.runtime import configure_environment

    if model.endswith((".yaml", ".yml")):
        return None
    configure_environment(workspace.cache_dir)
    try:
        backend, model = students.for_student(student, model)
        choice = students.choose(model, download=False, backend=backend)
    except AutolabelError:
        return None
    return Path(choice.source) if choice.pretrained else None


def _labeled_for_training(store: Store):
    """The images already labeled for training: what a new batch should be diverse from. The frozen
    validation images are left out (never picked anyway, and not what the student learns from)."""
    return [im for im in store.images(ids=list(store.labels())) if im.status != "validation"]


def _embed_pixels(workspace, store, pool):
    """Cheap DCT embeddings (no model): the cold start without pretrained weights."""
    import numpy as np

    from autolabel.embeddings import ensure_embeddings

    vectors = ensure_embeddings(store, workspace.image_root, pool)
    keep = [im for im in pool if im.id in vectors]
    embeddings = np.stack([vectors[im.id] for im in keep]) if keep else None
    labeled_embeddings = None
    labeled = _labeled_for_training(store)
    if labeled and embeddings is not None:
        known = ensure_embeddings(store, workspace.image_root, labeled)
        labeled_embeddings = np.stack(list(known.values())) if known else None
    return [im.id for im in keep], embeddings, labeled_embeddings


def _embed_with_weights(ctx: RoundContext, pool, weights: Path):
    """Backbone embeddings of a pretrained detector (what it learned on its own data) for the pool
    and the labeled images: a cold start that knows objects, not only pixels."""
    from autolabel.sampling.scorer import ScorerSettings

    t = ctx.recipe.train
    embedder = (weights, ScorerSettings(imgsz=t.imgsz, device=t.device, flip=False))
    ids, embeddings = _embed(ctx, embedder, pool, "embedding pool (pretrained backbone)")
    labeled = _labeled_for_training(ctx.store)
    labeled_embeddings = _embed(ctx, embedder, labeled, "embedding labeled images")[1] if labeled else None
    return ids, embeddings, labeled_embeddings


def _scored(ctx: RoundContext, scorer: tuple, images, what: str) -> list[dict]:
    """Result rows of a ``PoolScorer(*scorer)`` over ``images`` on the round's engine, in the
    images' order (the seeded tie-breaks of selection then do not depend on the engine)."""
    from functools import partial

    from autolabel.progress import progress_bar
    from autolabel.sampling.scorer import PoolScorer

    root = ctx.workspace.image_root
    rows = [{"id": im.id, "path": str(root / im.path)} for im in images]
    with progress_bar(what, total=len(rows)) as advance:
        results = list(
            ctx.engine.map(partial(PoolScorer, *scorer), [rows], batch_size=ctx.batch_size, advance=advance)
        )
    order = {row["id"]: k for k, row in enumerate(rows)}
    return sorted(results, key=lambda r: order[r["id"]])


def _embed(ctx: RoundContext, embedder: tuple, images, what: str):
    """(ids, N x D float32 or None) of the images a ``PoolScorer(*embedder)`` could embed."""
    import numpy as np

    good = [r for r in _scored(ctx, embedder, images, what) if r["embedding"] is not None]
    vectors = np.asarray([r["embedding"] for r in good], dtype=np.float32) if good else None
    return [r["id"] for r in good], vectors


def _score_with_student(ctx: RoundContext, pool, student):
    """Uncertainty + embeddings of the pool, and embeddings of the labeled images, by the current
    student (embeddings of an earlier student live in another space). Unscorable images drop out."""
    import numpy as np

    from autolabel.sampling.scorer import ScorerSettings
    from autolabel.sampling.select import score_vector

    recipe, log = ctx.recipe, ctx.log
    t = recipe.train
    # The flipped second pass only feeds the 'instability' score: skip it (half the cost) otherwise.
    flip = recipe.score == "instability"
    scorer = (student.weights_path, ScorerSettings(imgsz=t.imgsz, device=t.device, flip=flip))
    results = _scored(ctx, scorer, pool, "scoring pool")
    good = [r for r in results if r["error"] is None]
    if len(good) < len(results):
        log(f"{len(results) - len(good)} pool images could not be scored and are left out of this round")
    ids = [r["id"] for r in good]
    scores = score_vector([r["scores"] for r in good], recipe.score)
    empty = sum(1 for r in good if not (r["scores"] or {}).get("boxes"))
    if empty > len(good) // 2:
        log(f"the student finds no box on {empty} of {len(good)} pool images: their uncertainty ties, "
            "and the ties are broken at random (seeded)")  # fmt: skip
    embeddings = labeled_embeddings = None
    if good and all(r["embedding"] is not None for r in good):
        embeddings = np.asarray([r["embedding"] for r in good], dtype=np.float32)
        labeled = _labeled_for_training(ctx.store)
        if labeled:
            embedder = (student.weights_path, ScorerSettings(imgsz=t.imgsz, device=t.device, flip=False))
            labeled_embeddings = _embed(ctx, embedder, labeled, "embedding labeled images")[1]
    return ids, scores, embeddings, labeled_embeddings


def step_prelabel(ctx: RoundContext, round_index: int) -> dict:
    from functools import partial

    from autolabel.engine import model_key, propose_on
    from autolabel.proposers.base import BatchMapper, ProposerSettings

    store, recipe = ctx.store, ctx.recipe
    ids = batch_ids(store, round_index)
    student = runs.latest_finished(store, weights_on_disk=True)
    ws = ctx.workspace
    if student is not None:
        from autolabel import calibration
        from autolabel.proposers.student import StudentProposer

        names = store.class_names()
        # Stored at a low floor so the per-class thresholds (fitted now, applied at push) can go below
        # the default; the fit is recorded before anything is shown.
        fit = calibration.calibrate_round(
            store,
            round_index,
            ws.config.studio.costs,
            extra_pairs=lambda: calibration.validation_pairs(
                ws, store, student.weights_path, imgsz=recipe.train.imgsz, device=recipe.train.device
            ),
        )
        ctx.log(
            f"round {round_index}: student pre-label thresholds "
            + ", ".join(f"{n} {t:.2f}" for n, t in zip(names, fit.thresholds))
            + (
                f" (fitted on {fit.pairs} labeled images)"
                if fit.pairs >= 5
                else " (default: too few labeled images)"
            )
        )
        settings = ProposerSettings().model_copy(
            update={"model": "student", "batch_size": 8, "device": recipe.train.device}
        )
        build = partial(
            StudentProposer,
            student.weights_path,
            conf=calibration.FLOOR,
            imgsz=recipe.train.imgsz,
            device=recipe.train.device,
        )
        mapper = BatchMapper(build)
        class_ids = list(range(len(names)))
        key = f"student:run-{student.id}:floor-{calibration.FLOOR}"
    else:
        if ctx.ontology is None:
            return {"prelabeled": 0, "note": "no student and no ontology: the batch goes to review unlabeled"}
        from autolabel.proposers import build_proposer

        settings = ws.config.proposer
        reused = _stored_prelabels(ctx, ids, settings)
        if reused is not None:
            ctx.log(
                f"round {round_index}: reusing the pre-labels 'propose' stored for {len(ids)} images ({reused})"
            )
            return {"prelabeled": 0, "reused": len(ids), "model": reused}
        build = partial(build_proposer, settings, ctx.ontology)
        try:
            mapper = BatchMapper(build)
        except AutolabelError as exc:
            ctx.log(f"round {round_index}: no open-vocabulary pre-labels ({exc}); starting cold")
            return {"prelabeled": 0, "note": "proposer weights unavailable: cold start"}
        ids_by_name = store.ensure_classes(ctx.ontology.names)
        class_ids = [ids_by_name[n] for n in ctx.ontology.names]
        key = model_key(settings, mapper.model_version, ctx.ontology.fingerprint())
    summary = propose_on(
        ctx.engine, build, mapper, store, ws.image_root, class_ids, settings, key, image_ids=ids
    )
    return {
        "prelabeled": summary.proposed,
        "model": mapper.model_version,
        "errors": len(summary.model_errors),
    }


def _stored_prelabels(ctx: RoundContext, ids: list[int], settings) -> str | None:
    """The model version of the last ``propose`` when it already pre-labeled every batch image
    with the workspace's proposer settings and ontology: no model needs to be loaded."""
    from autolabel.engine import remembered_key

    remembered = remembered_key(ctx.store, settings, ctx.ontology.fingerprint())
    if remembered is None or not set(ids) <= ctx.store.predicted_ids(remembered[0]):
        return None
    return remembered[1]


def step_push(ctx: RoundContext, round_index: int) -> dict:
    from autolabel.studio import server
    from autolabel.studio.push import push

    store = ctx.store
    ws = ctx.workspace
    cfg = ws.config.studio
    document_root = (
        Path(cfg.document_root)
        if getattr(cfg, "document_root", None)
        else server.document_root(ws.image_root)
    )
    from autolabel.calibration import recorded_thresholds

    fit = recorded_thresholds(store).get(round_index)
    summary = push(
        store,
        ctx.studio(),
        image_root=ws.image_root,
        document_root=document_root,
        title=cfg.project_title,
        batch_size=cfg.batch_size,
        image_ids=batch_ids(store, round_index),
        student_thresholds=fit.thresholds if fit is not None else None,
        share=cfg.share_project,
    )
    if summary.refused:
        ctx.log(f"{len(summary.refused)} images refused by push: {summary.refused[:3]}")
    return {"project": summary.project_id, "created": summary.created, "replaced": summary.replaced}


def _done_in_batch(store: Store, ids: list[int]) -> int:
    from autolabel.studio.state import skipped_image_ids

    labeled = set(store.labels(ids))
    skipped = skipped_image_ids(store)
    return sum(1 for i in ids if i in labeled or i in skipped)


def step_wait(ctx: RoundContext, round_index: int) -> dict:
    """Replay: answer the batch from ground truth, then pull. Humans: pull until the batch is done."""
    from autolabel.studio.pull import pull
    from autolabel.studio.state import find_project

    store, recipe = ctx.store, ctx.recipe
    ws = ctx.workspace
    client = ctx.studio()
    ids = batch_ids(store, round_index)
    title = ws.config.studio.project_title
    if ctx.annotator == "replay":
        from autolabel.studio.replay import replay

        project = find_project(store, client.url, title)
        replay(client, project.project_id, ctx.labels_dir, class_names=store.class_names(), noise=ctx.noise)
    from autolabel.progress import progress_bar

    with progress_bar(f"round {round_index}: waiting for annotations", total=len(ids), unit="img") as advance:
        done_before = 0
        while True:
            summary = pull(store, client, title=title, share=ws.config.studio.share_project)
            if summary.error_message():
                raise AutolabelError(summary.error_message())
            done = _done_in_batch(store, ids)
            advance(done - done_before)
            done_before = done
            if done >= len(ids):
                break
            time.sleep(recipe.poll_seconds)
    return {"done": done_before, "batch": len(ids)}


def step_split(ctx: RoundContext, round_index: int) -> dict:
    from autolabel.dataset import split

    store, recipe = ctx.store, ctx.recipe
    result = split(store, ctx.workspace.image_root, val_fraction=recipe.val_fraction, seed=recipe.seed)
    counts = store.status_counts()
    return {"train": counts.get("labeled", 0), "val": counts.get("validation", 0), "new": _as_dict(result)}


def _as_dict(value) -> dict:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value):
        return {k: v for k, v in asdict(value).items() if isinstance(v, (int, float, str, bool))}
    return {}


def step_train(ctx: RoundContext, round_index: int) -> dict:
    from autolabel.evaluate import evaluate_run
    from autolabel.train import TrainSettings, train_student

    store, recipe = ctx.store, ctx.recipe
    finished = runs.finished_in_round(store, round_index)
    if finished is not None:  # trained before a crash that hit after the run was recorded: never train twice
        return {"run_id": finished.id, "reused": True}
    previous = runs.latest_finished(store, before_round=round_index, weights_on_disk=True)
    t = recipe.train
    warm = bool(t.warm_start and previous)
    settings = TrainSettings.from_section(
        t,
        resume_from=previous.weights_path if warm else None,
        close_mosaic=min(10, max(1, t.epochs // 3)),
        patience=max(t.epochs, 1),
        # a trained student needs no warm-up; a short round would spend most of its steps in it
        warmup_epochs=0.0 if warm else 3.0,
    )
    run_id = train_student(ctx.workspace, store, settings, warn=ctx.log)
    if settings.evaluate:
        evaluate_run(ctx.workspace, store, run_id, conf=settings.conf, iou=settings.iou)
    return {"run_id": run_id, "warm_start": settings.resume_from is not None}


def step_eval(ctx: RoundContext, round_index: int) -> dict:
    from autolabel.loop import step_status

    store = ctx.store
    _, train_result = step_status(store, round_index, "train")
    run = runs.get(store, train_result["run_id"])
    metrics = run.metrics
    if "map50_95" not in metrics:  # the process ended between training and its evaluation
        from autolabel.evaluate import evaluate_run

        metrics = evaluate_run(ctx.workspace, store, run.id).metrics
    labeled = len(store.labels())
    return {
        "run_id": run.id,
        "labels": labeled,
        "human_seconds": _human_seconds(store),
        **{
            k: metrics.get(k)
            for k in ("map50", "map50_95", "precision", "recall", "f1", "ap_small", "ap_medium", "ap_large")
        },
    }


def _human_seconds(store: Store) -> float:
    try:
        from autolabel.studio.state import round_summaries

        return round(sum(r.get("seconds") or 0.0 for r in round_summaries(store)), 1)
    except AutolabelError:
        return 0.0


def step_report(ctx: RoundContext, round_index: int) -> dict:
    """The page people look at (``autolabel report``), current after every round's evaluation."""
    from autolabel.report import write_report

    return {"report": str(write_report(ctx.workspace, ctx.store).path)}


def round_steps() -> list:
    return [
        ("select", step_select),
        ("prelabel", step_prelabel),
        ("push", step_push),
        ("wait", step_wait),
        ("split", step_split),
        ("train", step_train),
        ("eval", step_eval),
        ("report", step_report),
    ]
