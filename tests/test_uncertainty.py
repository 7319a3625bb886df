"""Bootstrap arithmetic on hand-made per-edit scores, and how report tables use it."""

import numpy as np
import pytest

from editkit.evaluation.uncertainty import (
    BOOTSTRAP_SEED,
    bootstrap_mean,
    combined_mean,
    paired_difference,
    significant_leader,
)


def scores(values, prefix="e"):
    return {f"{prefix}{i}": float(v) for i, v in enumerate(values)}


def test_interval_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (10, 100, 1000):
        values = (rng.random(n) < 0.6).astype(float)  # per-edit exact match of a 60 % method
        interval = bootstrap_mean(values)
        assert interval.low <= interval.estimate <= interval.high
        assert interval.estimate == pytest.approx(values.mean())
        assert interval.n == n and interval.seed == BOOTSTRAP_SEED
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] == pytest.approx(2 * 1.96 * np.sqrt(0.6 * 0.4 / 100), abs=0.05)  # the normal approximation


def test_interval_is_reproducible_and_degenerate_for_constant_scores():
    values = [0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0]
    assert bootstrap_mean(values) == bootstrap_mean(list(values))  # fixed seed: same numbers
    assert bootstrap_mean(values, seed=1) != bootstrap_mean(values)
    constant = bootstrap_mean([1.0] * 20)
    assert (constant.low, constant.estimate, constant.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_paired_difference_of_identical_runs_is_zero():
    a = [scores([0.2, 0.9, 0.4, 1.0, 0.0, 0.7])]
    diff = paired_difference(a, [dict(a[0])])
    assert diff.estimate == 0.0 and diff.low <= 0.0 <= diff.high and not diff.excludes_zero


def test_paired_difference_sees_a_constant_lead_that_unpaired_intervals_hide():
    base = np.linspace(0, 0.9, 30)  # edits of very different difficulty
    a, b = [scores(base + 0.1)], [scores(base)]
    diff = paired_difference(a, b)
    assert diff.estimate == pytest.approx(0.1) and diff.low == pytest.approx(0.1) and diff.excludes_zero
    ia, ib = bootstrap_mean(list(a[0].values())), bootstrap_mean(list(b[0].values()))
    assert ia.low < ib.high  # the two intervals overlap although every edit is better under a


def test_paired_difference_uses_only_shared_edits():
    a = [{"x": 1.0, "y": 1.0, "only-a": 0.0}]
    b = [{"x": 0.0, "y": 0.0, "only-b": 1.0}]
    assert paired_difference(a, b).estimate == 1.0 and paired_difference(a, b).n == 2
    with pytest.raises(ValueError):
        paired_difference([{"p": 1.0}], [{"q": 1.0}])


def test_combined_mean_is_the_mean_of_metric_means():
    rel, gen, loc = scores([1, 0, 1, 1]), scores([0, 0, 1, 0]), scores([1, 1, 1, 1])
    interval = combined_mean([rel, gen, loc])
    assert interval.estimate == pytest.approx((0.75 + 0.25 + 1.0) / 3)
    assert interval.low <= interval.estimate <= interval.high


def test_significant_leader_needs_a_paired_lead_over_every_other():
    base = np.linspace(0, 0.8, 40)
    clear = {0: [scores(base + 0.15)], 1: [scores(base)], 2: [scores(base + 0.05)]}
    assert significant_leader(clear, {0: 0.55, 1: 0.40, 2: 0.45}) == 0
    noise = np.random.default_rng(0).normal(0, 0.3, 40)
    close = {0: [scores(base + noise * 0.1 + 0.005)], 1: [scores(base)]}
    assert significant_leader(close, {0: float(np.mean(base + noise * 0.1 + 0.005)), 1: float(base.mean())}) is None
    assert significant_leader({0: [scores(base)]}, {0: 1.0}) is None  # one candidate: nothing to lead
    few = {0: [scores([1.0, 1.0, 1.0])], 1: [scores([0.0, 0.0, 0.0])]}
    assert paired_difference(few[0], few[1]).low == 1.0  # three edits: the bootstrap is sure ...
    assert significant_leader(few, {0: 1.0, 1: 0.0}) is None  # ... but three edits are too few to tell


def test_tables_mark_a_column_only_where_the_lead_is_significant():
    from editkit.reports.tables import significant_marks

    n = 40
    base = np.linspace(0, 0.8, n)
    wobble = np.random.default_rng(2).normal(0, 0.2, n)

    def run(rel, gen, loc):
        return {"reliability": scores(rel), "generalization": scores(gen), "locality": scores(loc)}

    reference = run(base, base, np.ones(n))
    clear = run(base + 0.2, base, np.ones(n))  # far better reliability, the same generalization
    close = run(base + 0.2 + wobble * 0.05, base, np.ones(n))  # as good as clear, give or take noise
    keys = ("reliability", "generalization", "locality", "mean")
    per_edit = [reference, clear, run(base, base, np.ones(n))]
    values = [tuple(float(np.mean(list(r[m].values()))) for m in keys[:3]) + (0.0,) for r in per_edit]
    values = [v[:3] + (sum(v[:3]) / 3,) for v in values]
    marks = significant_marks(keys, values, per_edit, [False, True, True])
    assert marks[0] == frozenset() and marks[2] == frozenset()  # the reference is never marked
    assert marks[1] == frozenset({0, 3})  # reliability and mean: a clear lead; generalization, locality: ties
    tight = [reference, clear, close]
    tight_values = [tuple(float(np.mean(list(r[m].values()))) for m in keys[:3]) for r in tight]
    tight_values = [v + (sum(v) / 3,) for v in tight_values]
    tight_marks = significant_marks(keys, tight_values, tight, [False, True, True])
    assert not tight_marks[1] & {0, 3} and not tight_marks[2] & {0, 3}  # a noisy near-tie: neither marked
    assert significant_marks(keys, values, [reference, clear, None], [False, True, True]) is None  # no per-edit scores
