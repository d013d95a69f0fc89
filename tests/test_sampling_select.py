"""Selection strategies: determinism, the hybrid pre-filter, class balance, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import AutolabelError
from autolabel.sampling import select as S


def pool(n=200, n_blobs=5, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (n_blobs, dim))
    blob = np.arange(n) % n_blobs
    embeddings = (centers[blob] + rng.normal(0, 0.1, (n, dim))).astype(np.float32)
    scores = rng.random(n)
    ids = [f"img{i:04d}" for i in range(n)]
    return ids, scores, embeddings, blob


def run(strategy, budget, seed=0, **overrides):
    ids, scores, embeddings, _ = pool()
    kwargs = {"scores": scores, "embeddings": embeddings, "seed": seed, **overrides}
    return S.select(strategy, budget, ids, **kwargs)


@pytest.mark.parametrize("strategy", S.STRATEGIES)
def test_same_seed_same_ordered_batch(strategy):
    first = run(strategy, 12, seed=5)
    assert first == run(strategy, 12, seed=5)
    assert len(first) == 12 == len(set(first))


@pytest.mark.parametrize("strategy", ["diversity", "hybrid"])
def test_kmeans_pp_diversity_is_seeded(strategy):
    ids, scores, embeddings, blob = pool()
    kwargs = {
        "scores": scores,
        "embeddings": embeddings,
        "diversity_method": "kmeans_pp",
        "prefilter_factor": 40,
    }
    picked = S.select(strategy, 5, ids, seed=3, **kwargs)
    assert picked == S.select(strategy, 5, ids, seed=3, **kwargs)
    assert sorted(blob[ids.index(i)] for i in picked) == [0, 1, 2, 3, 4]
    with pytest.raises(AutolabelError, match="unknown diversity method"):
        S.select(strategy, 5, ids, **{**kwargs, "diversity_method": "coreset"})


def test_random_depends_on_the_seed():
    assert run("random", 12, seed=1) != run("random", 12, seed=2)


def test_uncertainty_takes_the_highest_scores_in_order():
    ids, scores, _, _ = pool()
    picked = S.select("uncertainty", 5, ids, scores=scores)
    assert picked == [ids[i] for i in np.argsort(-scores)[:5]]


def test_uncertainty_ties_are_broken_by_the_seed_and_nan_goes_last():
    ids = ["a", "b", "c", "d"]
    picked = S.select("uncertainty", 4, ids, scores=[0.5, np.nan, 0.9, 0.5])
    assert picked[0] == "c" and set(picked[1:3]) == {"a", "d"} and picked[3] == "b"
    assert list(S.rank_by_score([0.5, np.nan, 0.9, 0.5])) == [2, 0, 3, 1]  # no seed: pool order


@pytest.mark.parametrize("strategy", ["uncertainty", "hybrid"])
def test_a_student_that_sees_nothing_does_not_hand_the_batch_to_the_first_files(strategy):
    """All scores equal (no boxes anywhere): the batch must not be the pool's first images."""
    rng = np.random.default_rng(0)
    ids = list(range(200))
    embeddings = rng.normal(size=(200, 8)).astype(np.float32)
    picks = [
        S.select(strategy, 10, ids, scores=np.zeros(200), embeddings=embeddings, seed=seed)
        for seed in range(3)
    ]
    assert all(max(p) >= 40 for p in picks)  # pool order would keep them all in the first 10 (or 40)
    assert picks[0] != picks[1]
    assert picks[0] == S.select(strategy, 10, ids, scores=np.zeros(200), embeddings=embeddings, seed=0)


def test_diversity_covers_every_blob():
    ids, _, embeddings, blob = pool()
    picked = S.select("diversity", 5, ids, embeddings=embeddings)
    assert sorted(blob[ids.index(i)] for i in picked) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("factor", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("budget", [1, 5, 10])
def test_hybrid_picks_only_from_the_uncertain_prefilter(budget, factor):
    ids, scores, embeddings, _ = pool()
    picked = S.select("hybrid", budget, ids, scores=scores, embeddings=embeddings, prefilter_factor=factor)
    n_candidates = S.prefilter_size(budget, len(ids), factor)
    prefilter = {ids[i] for i in np.argsort(-scores)[:n_candidates]}
    assert len(picked) == budget and set(picked) <= prefilter
    assert picked[0] == ids[int(np.argmax(scores))]  # nothing labeled yet: start at the most uncertain


def test_hybrid_spreads_over_blobs_where_uncertainty_alone_does_not():
    ids, scores, embeddings, blob = pool()
    scores = scores.copy()
    scores[blob == 0] += 1.0  # blob 0 is the most uncertain, but has 40 images
    plain = S.select("uncertainty", 5, ids, scores=scores)
    hybrid = S.select("hybrid", 5, ids, scores=scores, embeddings=embeddings, prefilter_factor=40)
    assert {blob[ids.index(i)] for i in plain} == {0}
    assert sorted(blob[ids.index(i)] for i in hybrid) == [0, 1, 2, 3, 4]


def test_labeled_embeddings_steer_diversity_away():
    ids, _, embeddings, blob = pool()
    labeled = embeddings[blob <= 1][:4]
    picked = S.select("diversity", 3, ids, embeddings=embeddings, labeled_embeddings=labeled)
    assert sorted(blob[ids.index(i)] for i in picked) == [2, 3, 4]


def test_typicality_cold_start_one_per_blob():
    ids, _, embeddings, blob = pool()
    picked = S.select("typicality", 5, ids, embeddings=embeddings)
    assert sorted(blob[ids.index(i)] for i in picked) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("strategy", S.STRATEGIES)
def test_budget_larger_than_pool_returns_the_whole_pool(strategy):
    ids, scores, embeddings, _ = pool(n=7)
    picked = S.select(strategy, 50, ids, scores=scores, embeddings=embeddings)
    assert sorted(picked) == sorted(ids)


@pytest.mark.parametrize("strategy", S.STRATEGIES)
def test_empty_pool_and_zero_budget(strategy):
    assert S.select(strategy, 10, [], scores=[], embeddings=np.zeros((0, 4))) == []
    ids, scores, embeddings, _ = pool(n=5)
    assert S.select(strategy, 0, ids, scores=scores, embeddings=embeddings) == []


@pytest.mark.parametrize(
    "strategy, missing, message",
    [
        ("uncertainty", "scores", "needs uncertainty scores"),
        ("hybrid", "scores", "needs uncertainty scores"),
        ("hybrid", "embeddings", "needs image embeddings"),
        ("diversity", "embeddings", "needs image embeddings"),
        ("typicality", "embeddings", "needs image embeddings"),
    ],
)
def test_missing_inputs_are_one_line_errors(strategy, missing, message):
    with pytest.raises(AutolabelError, match=message):
        run(strategy, 3, **{missing: None})


def test_unknown_strategy():
    with pytest.raises(AutolabelError, match="unknown strategy 'smart'"):
        run("smart", 3)


@pytest.mark.parametrize(
    "requested, has_student, has_embeddings, expected",
    [
        ("hybrid", True, True, "hybrid"),
        ("hybrid", False, True, "typicality"),
        ("uncertainty", False, False, "random"),
        ("diversity", False, False, "random"),
        ("diversity", False, True, "diversity"),
        ("random", False, False, "random"),
    ],
)
def test_resolve_strategy_cold_start(requested, has_student, has_embeddings, expected):
    strategy, note = S.resolve_strategy(requested, has_student=has_student, has_embeddings=has_embeddings)
    assert strategy == expected
    assert (note is None) == (strategy == requested)


@pytest.mark.parametrize(
    "image_classes, class_counts, expected",
    [
        # class 2 never labeled: rarity 1; class 0 most labeled: rarity 0; class 1: 1 - 50/100
        ([[0], [1], [2], []], {0: 100, 1: 50}, [1.0, 1.5, 2.0, 1.0]),
        ([[0, 2], [0, 1]], [100, 50, 0], [2.0, 1.5]),  # the rarest predicted class counts
        ([[0], [1]], {}, [2.0, 2.0]),  # nothing labeled yet: every class is rare
    ],
)
def test_class_rarity_boost(image_classes, class_counts, expected):
    boost = S.class_rarity_boost(image_classes, class_counts, 1.0, len(image_classes))
    assert boost.tolist() == pytest.approx(expected)


def test_class_balance_lifts_an_image_with_a_rare_class():
    ids = ["common", "rare"]
    scores = [0.6, 0.4]
    classes = [[0], [1]]
    counts = {0: 200, 1: 5}
    assert S.select("uncertainty", 1, ids, scores=scores) == ["common"]
    lifted = S.select(
        "uncertainty", 1, ids, scores=scores, image_classes=classes, class_counts=counts, class_balance=1.0
    )
    assert lifted == ["rare"]


def test_score_vector_reads_a_key_and_marks_missing_as_nan():
    rows = [{"entropy_sum": 1.5}, None, {"margin_max": 0.2}]
    vector = S.score_vector(rows, "entropy_sum")
    assert vector[0] == 1.5 and np.isnan(vector[1]) and np.isnan(vector[2])


def test_mismatched_lengths_are_rejected():
    ids, scores, embeddings, _ = pool(n=10)
    with pytest.raises(ValueError, match="scores"):
        S.select("uncertainty", 3, ids, scores=scores[:5])
    with pytest.raises(ValueError, match="embeddings"):
        S.select("diversity", 3, ids, embeddings=embeddings[:5])
