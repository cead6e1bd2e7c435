"""The paired Poisson bootstrap: weighted statistics equal sklearn's, and the 95% intervals cover the truth about
95% of the time in seeded simulations (an A/A test, and a student truly better than its teacher)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from crossadapt.metrics import auc, logloss, pcoc
from services.predictor.bootstrap import paired_bootstrap, weighted_auc, weighted_logloss, weighted_pcoc


def test_weighted_statistics_equal_sklearn_with_sample_weights() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.3).astype(float)
    p = np.round(np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, 3000), 0.001, 0.999), 2)  # rounding makes ties
    weights = rng.poisson(1.0, (6, 3000)).astype(float)
    assert np.allclose(weighted_auc(y, p, weights), [roc_auc_score(y, p, sample_weight=w) for w in weights])
    assert np.allclose(weighted_logloss(y, p, weights), [log_loss(y, p, sample_weight=w) for w in weights])
    assert np.allclose(weighted_pcoc(y, p, weights), [(w * p).sum() / (w * y).sum() for w in weights])
    ones = np.ones((1, 3000))
    assert weighted_auc(y, p, ones)[0] == pytest.approx(auc(y, p))
    assert weighted_logloss(y, p, ones)[0] == pytest.approx(logloss(y, p))
    assert weighted_pcoc(y, p, ones)[0] == pytest.approx(pcoc(y, p))


def test_a_single_class_gives_nan_not_an_error() -> None:
    result = paired_bootstrap(np.zeros(50), np.full(50, 0.2), np.full(50, 0.3), replicates=50, level=0.95,
                              rng=np.random.default_rng(0))
    assert np.isnan(result.delta_auc.estimate) and np.isnan(result.student_pcoc.lower)
    assert np.isfinite(result.delta_logloss.estimate) and result.delta_logloss.lower <= result.delta_logloss.upper
    empty = paired_bootstrap(np.zeros(0), np.zeros(0), np.zeros(0), replicates=50, level=0.95,
                             rng=np.random.default_rng(0))
    assert empty.rows == 0 and np.isnan(empty.delta_auc.lower)


def _world(rng: np.random.Generator, n: int, teacher_noise: float, student_noise: float):  # noqa: ANN202
    logit = rng.normal(-1.0, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    teacher = 1 / (1 + np.exp(-(logit + rng.normal(0, teacher_noise, n))))
    student = 1 / (1 + np.exp(-(logit + rng.normal(0, student_noise, n))))
    return y, teacher, student


@pytest.mark.parametrize(("teacher_noise", "student_noise"), [(0.8, 0.8), (1.0, 0.6)], ids=["A/A", "student-better"])
def test_intervals_cover_the_true_difference_about_95_percent_of_the_time(teacher_noise: float,
                                                                          student_noise: float) -> None:
    if teacher_noise == student_noise:
        true_auc = true_logloss = 0.0  # exchangeable arms: the population difference is 0
    else:  # the population difference, from a sample 400x larger than each run's
        truth_y, truth_t, truth_s = _world(np.random.default_rng(99), 400_000, teacher_noise, student_noise)
        true_auc = auc(truth_y, truth_s) - auc(truth_y, truth_t)
        true_logloss = logloss(truth_y, truth_s) - logloss(truth_y, truth_t)
        assert true_auc > 0.02 and true_logloss < -0.03
    runs, covered_auc, covered_logloss = 150, 0, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        y, teacher, student = _world(rng, 1000, teacher_noise, student_noise)
        result = paired_bootstrap(y, teacher, student, replicates=150, level=0.95, rng=rng)
        covered_auc += result.delta_auc.lower <= true_auc <= result.delta_auc.upper
        covered_logloss += result.delta_logloss.lower <= true_logloss <= result.delta_logloss.upper
    # 150 runs: the binomial standard error of a 95% coverage is 1.8 points.
    assert 0.89 <= covered_auc / runs <= 0.99, covered_auc / runs
    assert 0.89 <= covered_logloss / runs <= 0.99, covered_logloss / runs


def test_subsampling_widens_but_still_centres_the_interval() -> None:
    rng = np.random.default_rng(5)
    y, teacher, student = _world(rng, 20_000, 1.0, 0.6)
    full = paired_bootstrap(y, teacher, student, replicates=100, level=0.95, rng=np.random.default_rng(1))
    sub = paired_bootstrap(y, teacher, student, replicates=100, level=0.95, rng=np.random.default_rng(1),
                           max_rows=2_000)
    assert sub.delta_auc.estimate == full.delta_auc.estimate  # the estimate always uses every row
    assert sub.delta_auc.upper - sub.delta_auc.lower > 2 * (full.delta_auc.upper - full.delta_auc.lower)
    assert sub.delta_auc.lower < full.delta_auc.estimate < sub.delta_auc.upper
