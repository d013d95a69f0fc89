"""Export-time parity of a proposer's exported graph against PyTorch: raw outputs, then detections.

Raw outputs are compared query by query. A query agrees when every output row of it (logits,
boxes) is within its tolerance: ``atol + rtol * max |PyTorch output|`` (random or badly scaled
weights give logits in the thousands, where an fp32 graph rounds differently in the last digits).
DETR-style heads (Grounding DINO) emit their queries in the order of a top-k over encoder scores,
so near-equal scores may come out in another order from another runtime: with
``pair_queries=True`` each image's queries are first paired one-to-one by their boxes (Hungarian
on L1 distance, kept only when it beats the given order). The export passes when at least
``QUERY_MATCH`` of the queries agree (a near-tie at the top-k boundary swaps a query in or out).

Then the detections after post-processing at the configured thresholds: matched one-to-one by
class at IoU >= ``MATCH_IOU``; at least ``QUERY_MATCH`` of the larger box count must match, and
the scores, rank for rank, within ``score_atol`` (pairing by IoU alone may join two overlapping
neighbours with different scores).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autolabel.detections import match_pairs, match_rate, query_order

if TYPE_CHECKING:
    import supervision as sv

QUERY_MATCH = 0.99
MATCH_IOU = 0.9
BOXES = "boxes"
PARITY_SHAPES = ((48, 96), (100, 60), (64, 64))  # (h, w) of the synthetic parity images


def parity_images() -> list[np.ndarray]:
    """The parity check's inputs: seeded noise at ``PARITY_SHAPES`` (the same for every proposer)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for height, width in PARITY_SHAPES]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float = 0.0

    def limit(self, reference: np.ndarray) -> float:
        finite = np.abs(reference[np.isfinite(reference)])
        return self.atol + self.rtol * (float(finite.max()) if finite.size else 0.0)


def row_diffs(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per query (axis 0) max |diff| over the rest; equal values (infinities too) count 0, NaN inf."""
    expected = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    diff = np.where(expected == got, 0.0, np.abs(expected - got))
    diff = np.nan_to_num(diff, nan=np.inf)
    return diff.max(axis=1, initial=0.0)


def raw_parity(
    expected: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    tolerances: Mapping[str, Tolerance],
    *,
    pair_queries: bool = False,
) -> tuple[str | None, dict]:
    """Outputs shaped (images, queries, ...), named in ``tolerances``' order -> (reason, figures)."""
    names = list(tolerances)
    figures: dict = {}
    for name, want, have in zip(names, expected, got):
        if np.shape(want) != np.shape(have):
            return f"parity failed: {name} shaped {np.shape(have)}, PyTorch {np.shape(want)}", figures
    limits = {name: tolerances[name].limit(np.asarray(want)) for name, want in zip(names, expected)}
    worst = dict.fromkeys(names, 0.0)
    agree = total = 0
    reordered = False
    for image in range(len(expected[0])):
        order = np.arange(np.shape(expected[0])[1])
        if pair_queries and BOXES in names:
            boxes = names.index(BOXES)
            order = query_order(np.asarray(expected[boxes][image]), np.asarray(got[boxes][image]))
            reordered = reordered or bool((order != np.arange(len(order))).any())
        ok = np.ones(len(order), dtype=bool)
        for name, want, have in zip(names, expected, got):
            diffs = row_diffs(np.asarray(want[image]), np.asarray(have[image])[order])
            worst[name] = max(worst[name], float(diffs.max(initial=0.0)))
            ok &= diffs <= limits[name]
        agree, total = agree + int(ok.sum()), total + len(ok)
    share = 1.0 if total == 0 else agree / total
    figures.update({f"max_{name}_diff": worst[name] for name in names})
    figures.update({f"{name}_limit": limits[name] for name in names})
    figures.update({"queries": total, "queries_within": agree, "queries_reordered": reordered})
    if share >= QUERY_MATCH:
        return None, figures
    within = ", ".join(f"{name} by {worst[name]:.2g} (limit {limits[name]:.2g})" for name in names)
    return f"parity failed: {total - agree} of {total} queries differ ({within})", figures


def detections_parity(
    expected: Sequence[sv.Detections], got: Sequence[sv.Detections], *, score_atol: float
) -> tuple[str | None, dict]:
    """Detections per image: one-to-one by class at IoU >= ``MATCH_IOU``, scores within ``score_atol``."""
    matched = n_expected = n_got = 0
    worst_score = 0.0
    for want, have in zip(expected, got, strict=True):
        matched += len(match_pairs(want, have, MATCH_IOU))
        n_expected, n_got = n_expected + len(want), n_got + len(have)
        # Scores rank for rank: among many overlapping boxes a pair by IoU may join two neighbours.
        k = min(len(want), len(have))
        if k:
            ranked = [np.sort(np.asarray(d.confidence, np.float64))[::-1][:k] for d in (want, have)]
            worst_score = max(worst_score, float(np.abs(ranked[0] - ranked[1]).max()))
    rate = match_rate(matched, n_expected, n_got)
    figures = {
        "detections": n_expected,
        "detections_exported": n_got,
        "detections_matched": matched,
        "detection_match": round(rate, 4),
        "max_score_diff": worst_score,
    }
    if rate < QUERY_MATCH:
        return (
            f"parity failed: {matched} of {max(n_expected, n_got)} detections match at IoU {MATCH_IOU:g}",
            figures,
        )
    if worst_score > score_atol:
        return f"parity failed: scores differ by {worst_score:.2g} (limit {score_atol:g})", figures
    return None, figures


def export_parity(
    expected: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    tolerances: Mapping[str, Tolerance],
    detections_of: Callable[[Sequence[np.ndarray]], list[sv.Detections]],
    *,
    score_atol: float,
    pair_queries: bool = False,
) -> tuple[str | None, dict]:
    """The whole check on the parity images: raw outputs (``raw_parity``), then, when they agree,
    the detections ``detections_of(outputs)`` makes of each side (``detections_parity``)."""
    reason, figures = raw_parity(expected, got, tolerances, pair_queries=pair_queries)
    figures = {"images": len(expected[0]), **figures, "detections": 0}
    if reason:
        return reason, figures
    reason, matched = detections_parity(detections_of(expected), detections_of(got), score_atol=score_atol)
    return reason, {**figures, **matched}


__all__: Sequence[str] = (
    "MATCH_IOU",
    "PARITY_SHAPES",
    "QUERY_MATCH",
    "Tolerance",
    "detections_parity",
    "export_parity",
    "parity_images",
    "raw_parity",
    "row_diffs",
)
