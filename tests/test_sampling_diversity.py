"""Diversity over embeddings: coverage of clusters, the labeled set, determinism, typicality."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.sampling import diversity as V


def blobs(n_blobs=5, per_blob=40, dim=16, spread=0.05, seed=0, sizes=None):
    """Well-separated Gaussian blobs; returns (points, blob index of each point)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (n_blobs, dim)) * 10
    sizes = sizes or [per_blob] * n_blobs
    points = np.concatenate([rng.normal(c, spread, (s, dim)) for c, s in zip(centers, sizes)])
    labels = np.repeat(np.arange(n_blobs), sizes)
    return points.astype(np.float32), labels


@pytest.mark.parametrize("metric", V.METRICS)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_k_center_takes_one_point_per_blob(metric, seed):
    points, labels = blobs(seed=seed)
    picks = V.k_center_greedy(points, 5, metric=metric, seed=seed)
    assert sorted(labels[picks]) == [0, 1, 2, 3, 4]


def test_k_center_skips_blobs_the_labeled_set_covers():
    points, labels = blobs()
    labeled = points[labels < 2][:3]  # blobs 0 and 1 already have labels
    picks = V.k_center_greedy(points, 3, labeled=labeled, metric="l2")
    assert sorted(labels[picks]) == [2, 3, 4]


@pytest.mark.parametrize("method", [V.k_center_greedy, V.kmeans_pp, V.typical_clusters])
def test_same_seed_same_picks(method):
    points, _ = blobs(n_blobs=8, per_blob=30, spread=1.0)
    first = method(points, 10, seed=3)
    assert np.array_equal(first, method(points, 10, seed=3))
    assert len(set(first.tolist())) == 10  # no point picked twice


def test_seed_changes_the_start_without_labeled_set():
    points, _ = blobs(n_blobs=3, per_blob=50, spread=1.0)
    starts = {int(V.k_center_greedy(points, 1, seed=s)[0]) for s in range(6)}
    assert len(starts) > 1
    assert V.k_center_greedy(points, 1, first=17)[0] == 17


def test_kmeans_pp_spreads_over_blobs():
    points, labels = blobs(spread=0.01)
    picks = V.kmeans_pp(points, 5, metric="l2", seed=0)
    # D^2 sampling with blobs 10 000x farther apart than wide: all five blobs, almost surely.
    assert sorted(labels[picks]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("method", [V.k_center_greedy, V.kmeans_pp, V.typical_clusters])
@pytest.mark.parametrize("budget, expected", [(0, 0), (3, 3), (50, 12)])
def test_budget_is_capped_by_the_pool(method, budget, expected):
    points, _ = blobs(n_blobs=3, per_blob=4, spread=1.0)
    picks = method(points, budget)
    assert len(picks) == expected and len(set(picks.tolist())) == expected


def test_duplicates_are_never_picked_twice():
    points = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 distinct points, each 4 times
    picks = V.k_center_greedy(points, 6, metric="l2")
    assert len(set(picks.tolist())) == 6
    assert {tuple(points[p]) for p in picks[:3]} == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}


def test_cosine_ignores_scale_l2_does_not():
    # Two directions; along direction 0 the points differ only in length.
    points = np.array([[1, 0], [5, 0], [20, 0], [0, 1]], dtype=np.float32)
    cosine = V.k_center_greedy(points, 2, metric="cosine", first=0)
    l2 = V.k_center_greedy(points, 2, metric="l2", first=0)
    assert cosine.tolist() == [0, 3]  # the other direction is the farthest
    assert l2.tolist() == [0, 2]  # the longest vector is the farthest


def test_typicality_ranks_the_dense_core_above_outliers():
    rng = np.random.default_rng(0)
    core = rng.normal(0, 0.1, (50, 4))
    outliers = rng.normal(0, 5, (5, 4)) + 10
    density = V.typicality(np.concatenate([core, outliers]), k=5, metric="l2")
    assert density[:50].min() > density[50:].max()


def test_typical_clusters_picks_the_center_of_each_blob_biggest_first():
    points, labels = blobs(sizes=[60, 10, 30, 20, 40], spread=0.5, seed=2)
    picks = V.typical_clusters(points, 5, metric="l2", seed=0)
    assert labels[picks].tolist() == [0, 4, 2, 3, 1]  # one per blob, larger blobs first
    for pick in picks:
        members = points[labels == labels[pick]]
        distances = np.linalg.norm(members - points[pick], axis=1)
        # the pick is in the dense middle of its blob: closer than average to the rest
        assert distances.mean() < np.linalg.norm(members - members.mean(0), axis=1).mean() * 1.6


def test_typical_clusters_go_where_the_labeled_set_is_not():
    points, labels = blobs(sizes=[60, 10, 30, 20, 40], spread=0.5, seed=2)
    labeled = points[labels == 0][:5]
    picks = V.typical_clusters(points, 4, labeled=labeled, metric="l2", seed=0)
    assert 0 not in labels[picks].tolist()


def test_bad_inputs():
    with pytest.raises(ValueError, match="metric"):
        V.k_center_greedy(np.zeros((3, 2)), 1, metric="manhattan")
    with pytest.raises(ValueError, match="2-D"):
        V.k_center_greedy(np.zeros(3), 1)
    with pytest.raises(ValueError, match="dims"):
        V.k_center_greedy(np.zeros((3, 2)), 1, labeled=np.zeros((2, 5)))
