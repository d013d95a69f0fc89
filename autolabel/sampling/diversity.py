"""Diversity over image embeddings: k-center greedy, k-means++ seeding, typicality (cold start).

All functions take an N x D array and return positions into it, in pick order, deterministic for
a given ``seed``. ``metric`` is ``"cosine"`` (default: rows are L2-normalized first, so squared
L2 distance = 2 - 2 cos) or ``"l2"`` (raw Euclidean). Rows of ``labeled`` (embeddings of images
that already have labels) count as centers that are already chosen: new picks go where the
labeled set is thin. Nearest-neighbour searches use faiss (exact ``IndexFlatL2``); the greedy
updates read one row of a precomputed Gram matrix per pick (one GEMM up front) for candidate sets
of a few thousand, one matrix-vector product per pick beyond that.
"""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "l2")
GRAM_MAX_BYTES = 128 * 2**20  # candidate sets up to ~5,800 points use a precomputed Gram matrix


def prepare(embeddings, metric: str = "cosine") -> np.ndarray:
    """float32, C-contiguous, L2-normalized for the cosine metric (zero rows stay zero)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {x.shape}")
    if metric == "cosine" and len(x):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(x, dtype=np.float32)


def nearest_distances(x: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Squared L2 distance from each row of ``x`` to its nearest row of ``references`` (faiss)."""
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(references)
    distances, _ = index.search(x, 1)
    return np.maximum(distances[:, 0].astype(np.float32), 0.0)


def k_center_greedy(
    embeddings,
    budget: int,
    *,
    labeled=None,
    metric: str = "cosine",
    seed: int = 0,
    first: int | None = None,
) -> np.ndarray:
    """Greedy k-center (Sener & Savarese, 2018): each pick is the point farthest from all centers.

    Without labeled rows the first center is ``first`` when given, else a seeded random point.
    Ties go to the lowest position.
    """
    x = prepare(embeddings, metric)
    n = len(x)
    budget = min(int(budget), n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    min_dist = _initial_distances(x, labeled, metric)
    picks = np.empty(budget, dtype=np.int64)
    distances = _DistanceRows(x)
    for step in range(budget):
        if min_dist is None:
            pick = int(first) if first is not None else int(np.random.default_rng(seed).integers(n))
            min_dist = np.full(n, np.inf, dtype=np.float32)
        else:
            pick = int(np.argmax(min_dist))
        picks[step] = pick
        _update(min_dist, distances, pick)
    return picks


def kmeans_pp(embeddings, budget: int, *, labeled=None, metric: str = "cosine", seed: int = 0) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): picks drawn with probability ~ D(x)^2.

    Like k-center, but sampling instead of taking the farthest point, so outliers dominate less.
    """
    x = prepare(embeddings, metric)
    n = len(x)
    budget = min(int(budget), n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    min_dist = _initial_distances(x, labeled, metric)
    picks = np.empty(budget, dtype=np.int64)
    distances = _DistanceRows(x)
    chosen = np.zeros(n, dtype=bool)
    for step in range(budget):
        if min_dist is None:
            pick = int(rng.integers(n))
            min_dist = np.full(n, np.inf, dtype=np.float32)
        else:
            weights = np.where(chosen, 0.0, np.clip(min_dist.astype(np.float64), 0.0, None))
            total = weights.sum()
            if total > 0:
                pick = int(rng.choice(n, p=weights / total))
            else:  # the rest duplicates a center: uniform among the unchosen
                pick = int(rng.choice(np.flatnonzero(~chosen)))
        picks[step] = pick
        chosen[pick] = True
        _update(min_dist, distances, pick)
    return picks


def typicality(embeddings, k: int = 20, metric: str = "cosine") -> np.ndarray:
    """Density per row: 1 / (mean L2 distance to its ``k`` nearest other rows), as in TypiClust.

    Exact faiss search, O(N^2 D): meant for a cluster or a pool of a few ten thousand images.
    """
    import faiss

    x = prepare(embeddings, metric)
    n = len(x)
    if n <= 1:
        return np.ones(n, dtype=np.float64)
    k = max(1, min(int(k), n - 1))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    distances, _ = index.search(x, k + 1)  # the first neighbour is the row itself
    mean = np.sqrt(np.maximum(distances[:, 1:], 0.0)).mean(axis=1).astype(np.float64)
    return 1.0 / (mean + 1e-8)


def typical_clusters(
    embeddings,
    budget: int,
    *,
    labeled=None,
    metric: str = "cosine",
    seed: int = 0,
    k: int = 20,
    niter: int = 20,
) -> np.ndarray:
    """Cold-start pick (TypiClust, Hacohen et al. 2022): the most typical image of each cluster.

    faiss k-means (seeded with k-means++) splits the pool into ``budget + len(labeled)`` clusters;
    clusters holding the fewest labeled (or already picked) images go first, larger clusters
    before smaller ones, and from each the densest not-yet-picked image is taken.
    """
    import faiss

    x = prepare(embeddings, metric)
    n = len(x)
    budget = min(int(budget), n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    ref = _prepare_labeled(labeled, metric, x.shape[1])
    n_clusters = min(n, budget + len(ref))
    if n_clusters == n:
        assign = np.arange(n)
        centroids = x
    else:
        kmeans = faiss.Kmeans(
            x.shape[1], n_clusters, niter=niter, seed=int(seed), verbose=False, min_points_per_centroid=1
        )
        # k-means++ seeds instead of faiss's uniform init: fewer merged clusters, same determinism.
        kmeans.train(x, init_centroids=x[kmeans_pp(x, n_clusters, metric="l2", seed=seed)])
        centroids = kmeans.centroids
        assign = _assign(x, centroids)
    covered = (
        np.bincount(_assign(ref, centroids), minlength=n_clusters)
        if len(ref)
        else np.zeros(n_clusters, dtype=np.int64)
    )
    sizes = np.bincount(assign, minlength=n_clusters)
    members = {c: np.flatnonzero(assign == c) for c in range(n_clusters)}
    density: dict[int, np.ndarray] = {}
    taken = np.zeros(n, dtype=bool)
    remaining = sizes.copy()
    picks: list[int] = []
    while len(picks) < budget:
        order = np.lexsort((np.arange(n_clusters), -sizes, covered, remaining == 0))
        cluster = int(order[0])
        if cluster not in density:
            density[cluster] = typicality(x[members[cluster]], k=k, metric="l2")
        scores = np.where(taken[members[cluster]], -np.inf, density[cluster])
        pick = int(members[cluster][int(np.argmax(scores))])
        picks.append(pick)
        taken[pick] = True
        covered[cluster] += 1
        remaining[cluster] -= 1
    return np.asarray(picks, dtype=np.int64)


DIVERSITY_METHODS = {"k_center": k_center_greedy, "kmeans_pp": kmeans_pp}


def _prepare_labeled(labeled, metric: str, dim: int) -> np.ndarray:
    if labeled is None:
        return np.zeros((0, dim), dtype=np.float32)
    ref = np.asarray(labeled, dtype=np.float32)
    if ref.size == 0:
        return np.zeros((0, dim), dtype=np.float32)
    ref = prepare(ref.reshape(-1, ref.shape[-1]), metric)
    if ref.shape[1] != dim:
        raise ValueError(f"labeled embeddings have {ref.shape[1]} dims, the pool has {dim}")
    return ref


def _initial_distances(x: np.ndarray, labeled, metric: str) -> np.ndarray | None:
    ref = _prepare_labeled(labeled, metric, x.shape[1])
    if len(ref) == 0:
        return None
    return nearest_distances(x, ref)


class _DistanceRows:
    """Squared L2 distances from one point to all: rows of a precomputed Gram matrix when it fits
    in ``GRAM_MAX_BYTES`` (one GEMM, then O(N) per pick), else one dot product per pick.

    The per-pick product uses einsum rather than ``x @ v``: OpenBLAS's threaded sgemv is several
    times slower than a single-threaded loop on a busy machine.
    """

    def __init__(self, x: np.ndarray):
        self.x = x
        self.sq_norms = np.einsum("ij,ij->i", x, x)
        self.gram = x @ x.T if len(x) ** 2 * 4 <= GRAM_MAX_BYTES else None

    def __call__(self, pick: int) -> np.ndarray:
        dots = self.gram[pick] if self.gram is not None else np.einsum("ij,j->i", self.x, self.x[pick])
        return self.sq_norms + self.sq_norms[pick] - 2.0 * dots


def _update(min_dist: np.ndarray, distances: _DistanceRows, pick: int) -> None:
    """min_dist <- min(min_dist, |x - x[pick]|^2); the pick itself drops to -1 (never again)."""
    np.minimum(min_dist, distances(pick), out=min_dist)
    min_dist[pick] = -1.0


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, labels = index.search(x, 1)
    return labels[:, 0].astype(np.int64)
