"""Paired statistics: McNemar's exact p-value by hand, bootstrap intervals that cover a known difference."""

from __future__ import annotations

import numpy as np
import pytest

from capsrobust.evaluation.stats import at_chance, bootstrap_interval, compare_paired, mcnemar_exact, wilson_interval


def test_mcnemar_exact_matches_hand_computation():
    # b = 1, c = 6: p = 2 · P(X ≤ 1), X ~ Binomial(7, ½) = 2 · (1 + 7) / 128 = 0.125.
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # b = 0, c = 10: 2 / 1024.
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        baseline = rng.random(400) < 0.5
        candidate = rng.random(400) < 0.6  # true difference +0.10
        low, high = bootstrap_interval(baseline, candidate, n_resamples=2000, seed=trial)
        covered += low <= 0.10 <= high
    assert covered >= 34  # nominal 95% → expect ~38 of 40


def test_compare_paired_counts_discordant_pairs():
    baseline = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    candidate = np.array([1, 0, 1, 1, 1, 1], dtype=bool)
    result = compare_paired(baseline, candidate, n_resamples=500)
    assert (result.only_baseline, result.only_candidate) == (1, 3)
    assert result.difference == pytest.approx(5 / 6 - 3 / 6)
    assert result.ci_low <= result.difference <= result.ci_high
    with pytest.raises(ValueError, match="differ in length"):
        compare_paired(baseline, candidate[:3])


def test_wilson_interval_stays_inside_zero_one():
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0.0 < high < 0.1
    low, high = wilson_interval(50, 50)
    assert 0.9 < low < 1.0 and high == 1.0


@pytest.mark.parametrize(
    ("accuracy", "n", "classes", "expected"),
    [
        (0.10, 1000, 10, True),    # exactly chance
        (0.12, 100, 10, True),     # 12 of 100: the interval [6.9%, 19.8%] holds 10%
        (0.45, 1000, 2, True),     # below 50%
        (0.60, 100, 2, False),     # two classes: [50.2%, 69.1%] just misses 50%
        (0.58, 100, 2, True),      # [48.2%, 67.3%] holds it
        (0.98, 1000, 10, False),
        (0.30, 1000, 10, True),    # well above 1/K, but below 50%
    ],
)
def test_at_chance_is_a_wilson_interval_holding_one_over_k_or_below_half(accuracy, n, classes, expected):
    assert at_chance(accuracy, n, classes) is expected
