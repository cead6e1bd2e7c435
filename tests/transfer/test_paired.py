"""Paired deltas: the weighted AUC is exact, the row bootstrap is paired and covers at its stated rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from crossadapt.metrics import auc
from crossadapt.transfer.experiments.paired import (
    bootstrap_aucs,
    percentile_interval,
    resample_counts,
    seed_interval,
    weighted_aucs,
)


def test_weighted_auc_is_the_auc_of_the_repeated_rows_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300), 1)  # ten distinct values: many ties
    counts = resample_counts(300, 4, rng)
    assert (counts.sum(axis=1) == 300).all()
    got = weighted_aucs(labels, scores, np.vstack([np.ones(300), counts]))
    assert got[0] == pytest.approx(auc(labels, scores), abs=1e-12)
    for b in range(4):
        rows = np.repeat(np.arange(300), counts[b])
        assert got[b + 1] == pytest.approx(auc(labels[rows], scores[rows]), abs=1e-12)


def test_identical_methods_give_a_zero_delta_with_a_degenerate_interval() -> None:
    rng = np.random.default_rng(1)
    labels, scores = rng.random(5000) < 0.2, rng.random(5000)
    deltas = bootstrap_aucs(labels, scores, resamples=200) - bootstrap_aucs(labels, scores.copy(), resamples=200)
    assert (deltas == 0.0).all() and percentile_interval(deltas) == (0.0, 0.0)


def test_paired_row_interval_covers_the_true_delta_at_about_95_percent() -> None:
    """Binormal scores: model m scores x + σ_m·e with x ~ N(μ·y, 1), so its population AUC is
    Φ(μ / sqrt(2 (1 + σ_m²))); both models share x (paired). 120 test sets, 95% intervals."""
    mu, sigma_a, sigma_b, n = 1.0, 0.3, 0.8, 1000
    true_delta = norm.cdf(mu / math.sqrt(2 * (1 + sigma_a**2))) - norm.cdf(mu / math.sqrt(2 * (1 + sigma_b**2)))
    rng = np.random.default_rng(7)
    covered, widths = 0, []
    for trial in range(120):
        y = rng.random(n) < 0.3
        x = rng.standard_normal(n) + mu * y
        a, b = x + sigma_a * rng.standard_normal(n), x + sigma_b * rng.standard_normal(n)
        deltas = bootstrap_aucs(y, a, resamples=200, seed=trial) - bootstrap_aucs(y, b, resamples=200, seed=trial)
        low, high = percentile_interval(deltas)
        covered += low <= true_delta <= high
        widths.append(high - low)
    assert 0.88 <= covered / 120 <= 0.99, covered
    # Pairing is what makes the interval tight: far narrower than the two AUCs' own spread would give.
    assert 0.0 < np.mean(widths) < 0.07


def test_seed_interval_is_the_t_interval_of_the_deltas() -> None:
    low, high = seed_interval([1.0, 2.0, 3.0])  # type: ignore[misc]
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) · sd 1 / sqrt(3)
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-5)
    assert seed_interval([0.4]) is None


def test_bootstrap_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="as many labels as scores"):
        bootstrap_aucs(np.zeros(3), np.zeros(4))
