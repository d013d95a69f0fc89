"""Selection over scores and embeddings: which unlabeled images go to the humans next.

``select`` owns no model: it takes per-image scores (from ``uncertainty.image_scores``, picked by
key with ``score_vector``) and per-image embeddings, and returns a deterministic, ordered batch
of ids (most wanted first).

Strategies:

* ``random``: a seeded permutation.
* ``uncertainty``: highest score first (ties keep the pool order).
* ``diversity``: k-center greedy (or k-means++) over all embeddings, away from the labeled set.
* ``hybrid``: the ``prefilter_factor * budget`` most uncertain images, then k-center among them
  (PPAL, Yang et al. 2022), starting from the most uncertain one when nothing is labeled yet.
* ``typicality``: cold start (no student yet): the most typical image of each of ``budget``
  k-means clusters (TypiClust), clusters the labeled set already covers going last.

Class balance (``class_balance > 0``, score-based strategies only) multiplies each image's
score by ``1 + class_balance * rarity``, where ``rarity`` is that of the rarest class the student
predicts in it: ``1 - labeled_count(c) / max labeled_count`` (1 for a class with no labels yet).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from autolabel.errors import AutolabelError
from autolabel.sampling import diversity

__all__ = [
    "DEFAULT_PREFILTER_FACTOR",
    "DEFAULT_SCORE_KEY",
    "EMBEDDING_STRATEGIES",
    "SCORE_STRATEGIES",
    "STRATEGIES",
    "class_rarity_boost",
    "prefilter_size",
    "rank_by_score",
    "resolve_strategy",
    "score_vector",
    "select",
]

STRATEGIES = ("random", "uncertainty", "diversity", "hybrid", "typicality")
SCORE_STRATEGIES = ("uncertainty", "hybrid")
EMBEDDING_STRATEGIES = ("diversity", "hybrid", "typicality")
DEFAULT_SCORE_KEY = "entropy_sum"
DEFAULT_PREFILTER_FACTOR = 4.0


def select(
    strategy: str,
    budget: int,
    ids: Sequence,
    *,
    scores=None,
    embeddings=None,
    labeled_embeddings=None,
    seed: int = 0,
    prefilter_factor: float = DEFAULT_PREFILTER_FACTOR,
    diversity_method: str = "k_center",
    metric: str = "cosine",
    image_classes: Sequence[Sequence[int]] | None = None,
    class_counts: Mapping[int, int] | Sequence[int] | None = None,
    class_balance: float = 0.0,
) -> list:
    """The next batch: at most ``budget`` of ``ids``, in pick order, the same for the same seed.

    ``scores`` (higher = more uncertain), ``embeddings`` (N x D) and ``image_classes`` (the class
    ids the student predicts per image) are aligned with ``ids``; ``labeled_embeddings`` (M x D)
    are the images that already have labels, ``class_counts`` their boxes per class id.
    """
    if strategy not in STRATEGIES:
        raise AutolabelError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    ids = list(ids)
    n = len(ids)
    budget = min(int(budget), n)
    if budget <= 0:
        return []
    if strategy in SCORE_STRATEGIES:
        if scores is None:
            raise AutolabelError(f"strategy {strategy!r} needs uncertainty scores from a student")
        scores = _as_scores(scores, n)
        if class_balance > 0:
            scores = scores * class_rarity_boost(image_classes, class_counts, class_balance, n)
    if strategy in EMBEDDING_STRATEGIES:
        if embeddings is None:
            raise AutolabelError(f"strategy {strategy!r} needs image embeddings")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != n:
            raise ValueError(f"embeddings must be {n} x D, got shape {embeddings.shape}")

    if strategy == "random":
        order = np.random.default_rng(seed).permutation(n)[:budget]
    elif strategy == "uncertainty":
        order = rank_by_score(scores, seed)[:budget]
    elif strategy == "diversity":
        order = _diverse(embeddings, budget, labeled_embeddings, diversity_method, metric, seed)
    elif strategy == "hybrid":
        candidates = rank_by_score(scores, seed)[: prefilter_size(budget, n, prefilter_factor)]
        picked = _diverse(
            embeddings[candidates], budget, labeled_embeddings, diversity_method, metric, seed, first=0
        )
        order = candidates[picked]
    else:
        order = diversity.typical_clusters(
            embeddings, budget, labeled=labeled_embeddings, metric=metric, seed=seed
        )
    return [ids[i] for i in order]


def resolve_strategy(strategy: str, *, has_student: bool, has_embeddings: bool) -> tuple[str, str | None]:
    """The strategy that can run now, and why it differs from the one asked for (or None).

    Without a student there are no uncertainty scores: cold start uses typicality over the
    embeddings when there are any, else random.
    """
    if strategy not in STRATEGIES:
        raise AutolabelError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy in SCORE_STRATEGIES and not has_student:
        fallback = "typicality" if has_embeddings else "random"
        return fallback, f"no student yet: cold start with {fallback} instead of {strategy}"
    if strategy in EMBEDDING_STRATEGIES and not has_embeddings:
        return "random", f"no image embeddings: random instead of {strategy}"
    return strategy, None


def rank_by_score(scores, seed: int | None = None) -> np.ndarray:
    """Positions by descending score, NaN last; ties in pool order, or in a seeded random order.

    Ties are common, not a corner case: a weak early student finds no box at all on most images,
    and every such image gets the same (empty) score. Breaking those ties by pool order would hand
    the batch to whatever sorts first (file names, registration order); a seed spreads it instead.
    """
    scores = np.asarray(scores, dtype=np.float64)
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    if seed is None:
        return np.argsort(-keyed, kind="stable")
    tiebreak = np.random.default_rng(seed).permutation(len(keyed))
    return np.lexsort((tiebreak, -keyed))


def prefilter_size(budget: int, pool: int, factor: float) -> int:
    if factor < 1:
        raise ValueError(f"prefilter_factor must be >= 1, got {factor}")
    return min(pool, max(budget, math.ceil(factor * budget)))


def score_vector(
    rows_scores: Sequence[Mapping[str, float] | None], key: str = DEFAULT_SCORE_KEY
) -> np.ndarray:
    """One score per image from the scorer's ``scores`` dicts; a missing dict or key is NaN."""
    out = np.full(len(rows_scores), np.nan, dtype=np.float64)
    for i, scores in enumerate(rows_scores):
        if scores and key in scores and scores[key] is not None:
            out[i] = float(scores[key])
    return out


def class_rarity_boost(
    image_classes: Sequence[Sequence[int]] | None,
    class_counts: Mapping[int, int] | Sequence[int] | None,
    strength: float,
    n: int,
) -> np.ndarray:
    """Per-image multiplier ``1 + strength * rarity`` of the rarest predicted class (1 if none)."""
    if image_classes is None:
        raise AutolabelError("class balance needs the classes the student predicts per image")
    if len(image_classes) != n:
        raise ValueError(f"image_classes has {len(image_classes)} entries for {n} images")
    counts = (
        dict(class_counts.items())
        if isinstance(class_counts, Mapping)
        else dict(enumerate(class_counts or []))
    )
    most = max(counts.values(), default=0)
    boost = np.ones(n, dtype=np.float64)
    for i, classes in enumerate(image_classes):
        if len(classes) == 0:
            continue
        rarity = max(1.0 - counts.get(int(c), 0) / most if most > 0 else 1.0 for c in classes)
        boost[i] = 1.0 + strength * rarity
    return boost


def _as_scores(scores, n: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"got {len(scores)} scores for {n} images")
    return scores


def _diverse(embeddings, budget, labeled, method, metric, seed, first=None) -> np.ndarray:
    if method == "k_center":
        return diversity.k_center_greedy(
            embeddings, budget, labeled=labeled, metric=metric, seed=seed, first=first
        )
    if method == "kmeans_pp":
        return diversity.kmeans_pp(embeddings, budget, labeled=labeled, metric=metric, seed=seed)
    raise AutolabelError(
        f"unknown diversity method {method!r}; choose from {', '.join(diversity.DIVERSITY_METHODS)}"
    )
