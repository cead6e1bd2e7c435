"""Metrics against scikit-learn / scipy on random data with many ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from crossadapt import metrics as M


def _tied_data(seed: int, n: int = 5000, levels: int = 20):
    rng = np.random.default_rng(seed)
    p = np.round(rng.random(n) * levels) / levels  # only levels+1 distinct scores -> many ties
    y = (rng.random(n) < 0.2 + 0.6 * p).astype(np.float32)
    return y, p.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    y, p = _tied_data(seed)
    assert M.auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)


def test_auc_hand_example_and_extremes():
    assert M.auc([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.4]) == 0.875
    assert M.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert M.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_average_ranks_match_scipy():
    _, p = _tied_data(3)
    np.testing.assert_allclose(M.average_ranks(p), stats.rankdata(p), rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 4])
def test_gauc_matches_per_group_sklearn(seed):
    rng = np.random.default_rng(seed)
    y, p = _tied_data(seed, n=4000, levels=6)
    users = rng.integers(0, 150, size=y.shape[0])
    users[:7] = 10_000  # a user with one class only (all labels forced to 1) must be skipped
    y[:7] = 1
    total, weight = 0.0, 0
    for u in np.unique(users):
        m = users == u
        if len(np.unique(y[m])) < 2:
            continue
        total += skm.roc_auc_score(y[m], p[m]) * m.sum()
        weight += m.sum()
    assert M.gauc(y, p, users) == pytest.approx(total / weight, abs=1e-12)


def test_gauc_equals_auc_for_one_group_and_rejects_all_single_class_groups():
    y, p = _tied_data(5, n=500)
    assert M.gauc(y, p, np.zeros(500, dtype=np.int64)) == pytest.approx(M.auc(y, p), abs=1e-12)
    with pytest.raises(M.MetricError, match="none of the 2 groups"):
        M.gauc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [1, 1, 2, 2])


def test_logloss_matches_sklearn_and_clips():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000).astype(np.float32)
    p = rng.uniform(0.01, 0.99, 3000).astype(np.float32)
    assert M.logloss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-6)
    # p = 0 for a positive would be inf without clipping; clipped it is -log(eps) on that row.
    assert M.logloss([1.0], [0.0]) == pytest.approx(-np.log(M.LOGLOSS_EPS), rel=1e-9)
    assert np.isfinite(M.logloss([0.0, 1.0], [1.0, 0.0]))


def test_logloss_soft_labels():
    assert M.logloss([0.25], [0.5]) == pytest.approx(np.log(2.0), rel=1e-12)


def test_pcoc_and_pcvr_bias():
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=np.float32)
    p = np.array([0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 0.3, 0.3], dtype=np.float32)
    assert M.pcoc(y, p) == pytest.approx(2.7 / 2.0)
    items = np.array([7, 7, 7, 9, 9, 9, 11, 11])
    # item 7: |1.5-1|/1 = 0.5, item 9: |0.6-1|/1 = 0.4, item 11 has no positive -> skipped
    assert M.pcvr_bias(y, p, items) == pytest.approx(0.45, rel=1e-6)
    with pytest.raises(M.MetricError, match="no positive"):
        M.pcoc([0, 0], [0.1, 0.2])


def test_spearman_matches_scipy_with_ties():
    y, p = _tied_data(6, levels=10)
    rng = np.random.default_rng(6)
    q = np.round(p + rng.normal(0, 0.2, p.shape[0]), 1)
    assert M.spearman(p, q) == pytest.approx(stats.spearmanr(p, q).statistic, abs=1e-12)
    with pytest.raises(M.MetricError, match="constant"):
        M.spearman([1, 1, 1], [1, 2, 3])


@pytest.mark.parametrize("k", [1, 5, 10, 1000])
def test_ndcg_matches_sklearn_with_ties(k):
    rng = np.random.default_rng(k)
    rel = rng.random(300)
    scores = np.round(rel + rng.normal(0, 0.3, 300), 1)  # tied scores
    expected_linear = skm.ndcg_score(rel[None], scores[None], k=k)
    assert M.ndcg_at_k(rel, scores, k, gain="linear") == pytest.approx(expected_linear, abs=1e-12)
    expected_exp = skm.ndcg_score((2.0**rel - 1)[None], scores[None], k=k)
    assert M.ndcg_at_k(rel, scores, k) == pytest.approx(expected_exp, abs=1e-12)
    assert M.ndcg_at_k(rel, rel, k) == pytest.approx(1.0)


def test_group_means():
    ids, (m,), counts = M.group_means([3, 1, 3], [1.0, 2.0, 5.0])
    assert ids.tolist() == [1, 3] and m.tolist() == [2.0, 3.0] and counts.tolist() == [1, 2]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: M.auc([0, 1, 1], [0.1, np.nan, 0.3]), "p has 1 NaN/inf value.*index 1"),
        (lambda: M.auc([0, 1, 1], [0.1, 0.3]), r"y has shape \(3,\) but p has shape \(2,\)"),
        (lambda: M.auc([1, 1, 1], [0.1, 0.2, 0.3]), "only one class"),
        (lambda: M.auc([0, 2], [0.1, 0.2]), "only 0/1 labels.*index 1"),
        (lambda: M.auc([], []), "y is empty"),
        (lambda: M.logloss([0, 1], [[0.1, 0.2], [0.3, 0.4]]), "must be 1-d"),
        (lambda: M.logloss([0, 1.5], [0.1, 0.2]), r"\[0, 1\]"),
        (lambda: M.gauc([0, 1], [0.1, 0.2], [1]), "groups has shape"),
        (lambda: M.ndcg_at_k([0, 0], [0.1, 0.2], 2), "every relevance is 0"),
        (lambda: M.ndcg_at_k([1, 0], [0.1, 0.2], 0), "k must be"),
    ],
)
def test_clear_errors(call, message):
    with pytest.raises(M.MetricError, match=message):
        call()
