"""How sure a mean is: percentile bootstrap intervals over edits, and paired bootstraps between methods.

Every mean editkit reports is a mean over the edits of one stream, so the edits are what is resampled. The
resampling is seeded with a fixed seed (:data:`BOOTSTRAP_SEED`, recorded with every interval), so the same
scores always give the same interval. Two methods run on the same stream are compared edit by edit (a paired
bootstrap of the per-edit differences), which is far tighter than comparing two independent intervals: a
hard edit is hard for every method.

Scores are keyed by edit id. A statistic over several metrics (the tables' Mean column) resamples the edit
ids once and takes every metric's mean over the same resample, so the metrics stay paired as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

#: the seed of every bootstrap; stored with each interval so a reader can reproduce it
BOOTSTRAP_SEED = 0
#: resamples per interval; the percentile bounds move by less than .005 between runs of 1,000 on 50 edits
RESAMPLES = 1000
LEVEL = 0.95
#: fewer shared edits than this and no lead is called significant: the percentile bootstrap of a handful
#: of edits is far too sure of itself (3 edits that all favour one method give an interval above 0)
MIN_EDITS_FOR_SIGNIFICANCE = 10

#: per-edit scores of one metric: edit id -> value
Scores = Mapping[str, float]


@dataclass(frozen=True)
class Interval:
    """A statistic, its ``LEVEL`` percentile bootstrap interval, and what the interval was computed from."""

    estimate: float
    low: float
    high: float
    n: int
    seed: int = BOOTSTRAP_SEED
    resamples: int = RESAMPLES

    @property
    def excludes_zero(self) -> bool:
        """For a difference: whether the interval lies wholly on one side of 0 (the lead is significant)."""
        return self.low > 0 or self.high < 0


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] indices drawn with replacement; the same for the same (n, resamples, seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(estimate: float, replicates: np.ndarray, n: int, seed: int, resamples: int) -> Interval:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    # the percentile of a constant sample can differ from it in the last bit; the estimate is inside
    return Interval(float(estimate), float(min(low, estimate)), float(max(high, estimate)), n, seed, resamples)


def bootstrap_mean(values: Sequence[float], seed: int = BOOTSTRAP_SEED, resamples: int = RESAMPLES) -> Interval:
    """The mean of ``values`` (one per edit) with its percentile bootstrap interval."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    replicates = array[_draws(array.size, resamples, seed)].mean(axis=1)
    return _interval(array.mean(), replicates, array.size, seed, resamples)


def _metric_matrix(per_metric: Sequence[Scores], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """[metrics, ids] values (0 where missing) and presence masks."""
    values = np.zeros((len(per_metric), len(ids)))
    present = np.zeros_like(values, dtype=bool)
    for m, scores in enumerate(per_metric):
        for j, edit_id in enumerate(ids):
            if edit_id in scores:
                values[m, j], present[m, j] = scores[edit_id], True
    return values, present


def _mean_of_means(values: np.ndarray, present: np.ndarray, draws: np.ndarray | None, chunk: int = 100) -> np.ndarray:
    """Mean over metrics of each metric's mean over the (resampled) ids; one number per resample (taken
    ``chunk`` resamples at a time, so thousands of edits need no gigabytes)."""
    if draws is None:
        draws = np.arange(values.shape[1])[None, :]
    weighted = values * present
    out = []
    for start in range(0, len(draws), chunk):
        part = draws[start : start + chunk]
        counts = present[:, part].sum(axis=2)  # [metrics, resamples]
        sums = weighted[:, part].sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((sums / counts).mean(axis=0))  # nan where a resample drew no id of some metric
    return np.concatenate(out)


def combined_mean(per_metric: Sequence[Scores], seed: int = BOOTSTRAP_SEED, resamples: int = RESAMPLES) -> Interval:
    """The mean of several metrics' means (Rel, Gen, Loc -> Mean), resampling edit ids jointly."""
    ids = sorted(set().union(*per_metric))
    if not ids or any(not scores for scores in per_metric):
        raise ValueError("combined_mean needs scores for every metric")
    values, present = _metric_matrix(per_metric, ids)
    estimate = float(_mean_of_means(values, present, None)[0])
    replicates = _mean_of_means(values, present, _draws(len(ids), resamples, seed))
    return _interval(estimate, replicates[np.isfinite(replicates)], len(ids), seed, resamples)


def paired_difference(
    a: Sequence[Scores], b: Sequence[Scores], seed: int = BOOTSTRAP_SEED, resamples: int = RESAMPLES
) -> Interval:
    """Mean of metrics of ``a`` minus that of ``b`` (one metric or several), over the edits both scored,
    with a paired bootstrap interval: each resample draws edit ids once and scores both methods on them.

    ``a`` and ``b`` hold the same metrics in the same order, each keyed by edit id."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_difference needs the same metrics for both methods")
    shared = [{k: v for k, v in sa.items() if k in sb} for sa, sb in zip(a, b)]
    a = [{k: sa[k] for k in s} for sa, s in zip(a, shared)]
    b = [{k: sb[k] for k in s} for sb, s in zip(b, shared)]
    ids = sorted(set().union(*shared))
    if not ids or any(not s for s in shared):
        raise ValueError("the two methods share no scored edit")
    (va, pa), (vb, pb) = _metric_matrix(a, ids), _metric_matrix(b, ids)
    estimate = float(_mean_of_means(va, pa, None)[0] - _mean_of_means(vb, pb, None)[0])
    draws = _draws(len(ids), resamples, seed)
    replicates = _mean_of_means(va, pa, draws) - _mean_of_means(vb, pb, draws)
    return _interval(estimate, replicates[np.isfinite(replicates)], len(ids), seed, resamples)


def significant_leader(candidates: Mapping[int, Sequence[Scores]], estimates: Mapping[int, float]) -> int | None:
    """The candidate with the highest estimate if its paired lead over every other candidate is
    significant (the interval of the difference lies above 0, over at least
    :data:`MIN_EDITS_FOR_SIGNIFICANCE` shared edits), else None."""
    if len(candidates) < 2:
        return None
    leader = max(estimates, key=lambda k: (estimates[k], -k))
    for other, scores in candidates.items():
        if other == leader:
            continue
        try:
            difference = paired_difference(candidates[leader], scores)
        except ValueError:
            return None  # nothing shared to compare on: no lead can be shown
        if not difference.low > 0 or difference.n < MIN_EDITS_FOR_SIGNIFICANCE:
            return None
    return leader
