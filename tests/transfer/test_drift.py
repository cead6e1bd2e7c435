"""Shift detection (Eq. 13): divergences against scipy, histogram layout, planted shifts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy, wasserstein_distance

from crossadapt.transfer.drift.detector import (
    DriftConfig,
    HistogramBinner,
    js_divergence,
    kl_divergence,
    measure_drift,
    wasserstein_1d,
)

P = np.array([0.1, 0.4, 0.5, 0.0])
Q = np.array([0.3, 0.3, 0.2, 0.2])


def test_js_identical_disjoint_symmetric_and_matches_scipy() -> None:
    assert js_divergence(P, P) == pytest.approx(0.0, abs=1e-15)
    assert js_divergence([1, 1, 0, 0], [0, 0, 2, 5]) == pytest.approx(1.0)  # disjoint: 1 bit (ln 2 nats)
    assert js_divergence(P, Q) == pytest.approx(js_divergence(Q, P), rel=1e-12)
    assert js_divergence(P, Q) == pytest.approx(jensenshannon(P, Q, base=2) ** 2, rel=1e-10)
    rng = np.random.default_rng(0)
    many_p, many_q = rng.random((20, 7)), rng.random((20, 7))
    values = js_divergence(many_p, many_q)
    assert values.shape == (20,) and (values >= 0).all() and (values <= 1).all()
    np.testing.assert_allclose(values, jensenshannon(many_p, many_q, base=2, axis=1) ** 2, rtol=1e-9)


def test_kl_non_negative_and_matches_scipy_entropy() -> None:
    p, q = np.array([0.2, 0.5, 0.3]), np.array([0.4, 0.4, 0.2])
    assert kl_divergence(p, q) == pytest.approx(entropy(p, q), rel=1e-12)
    assert kl_divergence(q, p) != pytest.approx(kl_divergence(p, q))  # not symmetric
    eps = 1e-3
    smooth = lambda x: (x + eps) / (1 + eps * len(x))  # noqa: E731
    assert kl_divergence(P, Q, epsilon=eps) == pytest.approx(entropy(smooth(P), smooth(Q)), rel=1e-12)
    assert np.isfinite(kl_divergence(Q, P, epsilon=eps))  # Q has mass where P has none: smoothing keeps it finite
    assert kl_divergence(Q, P) == np.inf
    rng = np.random.default_rng(1)
    assert (kl_divergence(rng.random((50, 6)), rng.random((50, 6)), epsilon=1e-6) >= 0).all()


def test_wasserstein_matches_scipy() -> None:
    positions = np.array([0.0, 0.5, 2.0, 3.5])
    expected = wasserstein_distance(positions, positions, P, Q)
    assert wasserstein_1d(P, Q, positions) == pytest.approx(expected, rel=1e-12)
    assert wasserstein_1d([1, 0, 0, 0], [0, 0, 0, 1], positions) == pytest.approx(3.5)
    with pytest.raises(ValueError, match="sorted"):
        wasserstein_1d(P, Q, positions[::-1])


@pytest.mark.parametrize("metric", ["js", "kl", "wasserstein"])
def test_flat_layout_equals_per_feature_computation(metric: str) -> None:
    """The fused all-features pass (reduceat / segmented cdf) must equal feature-by-feature metrics."""
    rng = np.random.default_rng(2)
    binner = HistogramBinner([3, 5], [np.array([0.0, 1.0, 2.0, 4.0])], ["a", "b", "x"])
    counts = rng.integers(0, 20, (3, binner.total_slots)).astype(float)
    counts[:, 2] = 0  # an empty slot
    segments = [counts[:, s : s + n] for s, n in zip(binner.starts, binner.sizes)]
    probs = np.concatenate([seg / seg.sum(1, keepdims=True) for seg in segments], axis=1)
    fused = binner.divergence(probs[:-1], probs[1:], metric, kl_epsilon=1e-4)
    for j, (start, size) in enumerate(zip(binner.starts, binner.sizes)):
        p, q = probs[:-1, start : start + size], probs[1:, start : start + size]
        if metric == "js":
            expected = js_divergence(p, q)
        elif metric == "kl":
            expected = kl_divergence(p, q, epsilon=1e-4)
        else:
            expected = wasserstein_1d(p, q, binner.positions[start : start + size])
        np.testing.assert_allclose(fused[:, j], expected, rtol=1e-9, atol=1e-15)


def test_feature_groups_compute_the_same_as_one_pass() -> None:
    """measure_drift works a few features at a time to bound memory; the pieces must add up exactly."""
    categorical, numerical = _stream(6_000, 11)
    binner = HistogramBinner.fit(numerical, [30] * 4, bins=10)
    groups = binner.feature_groups(max_slots=40)
    assert len(groups) > 2 and [j for g in groups for j in g] == list(range(6))
    assert binner.feature_groups(max_slots=1) == [range(j, j + 1) for j in range(6)]  # big features stand alone
    bounds = np.array([0, 2_000, 4_000, 6_000])
    whole = binner.counts(categorical, numerical, bounds)
    pieces = np.concatenate([binner.counts(categorical, numerical, bounds, g) for g in groups], axis=1)
    np.testing.assert_array_equal(pieces, whole)
    probs = whole / 2_000.0
    full = binner.divergence(probs[:-1], probs[1:], "wasserstein")
    for g in groups:
        part = probs[:, binner.slot_range(g)]
        grouped = binner.divergence(part[:-1], part[1:], "wasserstein", features=g)
        np.testing.assert_allclose(grouped, full[:, g.start : g.stop])


def test_slot_ids_agree_with_window_counts() -> None:
    """The two counting paths (per-value slots for small stream batches, sort/bincount for windows)."""
    categorical, numerical = _stream(3_000, 12)
    numerical[::9, 0] = np.nan
    binner = HistogramBinner.fit(numerical, [30] * 4, bins=15)
    slots = binner.slot_ids(categorical, numerical)
    assert slots.shape == (3_000, 6)
    whole = binner.counts(categorical, numerical)[0]
    np.testing.assert_array_equal(np.bincount(slots.ravel(), minlength=binner.total_slots), whole)
    categorical[5, 3] = 30
    with pytest.raises(ValueError, match=r"'cat_3': row 5 has id 30"):
        binner.slot_ids(categorical, numerical)


def test_numerical_histograms_shared_edges_and_missing_slot() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(size=(5_000, 1)).astype(np.float32)
    values[::10, 0] = np.nan
    binner = HistogramBinner.fit(values, [], bins=20)
    edges = binner.numerical_edges[0]
    finite = values[~np.isnan(values[:, 0]), 0].astype(np.float64)
    np.testing.assert_allclose(edges, np.quantile(finite, np.linspace(0, 1, 21)), rtol=1e-12)
    counts = binner.counts(None, values, np.array([0, 2_000, 5_000]))
    assert counts.shape == (2, 21)
    assert counts[0, 0] == 200 and counts[1, 0] == 300  # NaN -> missing slot
    reference = np.searchsorted(edges[1:-1], values[:2_000, 0], side="right")[~np.isnan(values[:2_000, 0])]
    np.testing.assert_array_equal(counts[0, 1:], np.bincount(reference, minlength=20))
    assert counts.sum() == 5_000
    ranged = HistogramBinner.fit(values, [], bins=20, binning="range").numerical_edges[0]
    np.testing.assert_allclose(ranged, np.linspace(finite.min(), finite.max(), 21))
    constant = HistogramBinner.fit(np.ones((10, 1)), [], bins=50)
    assert constant.sizes.tolist() == [2]  # missing slot + one bin; no crash on zero range


def _stream(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    categorical = (30 * rng.random((rows, 4)) ** 2).astype(np.int64)  # skewed ids, so a relabelling shows
    numerical = rng.normal(size=(rows, 2))
    return categorical, numerical


@pytest.mark.parametrize("noise_floor", ["crossed_halves", "none"])
@pytest.mark.parametrize("metric", ["js", "kl", "wasserstein"])
def test_planted_shift_tops_the_table_and_raises_the_shift(metric: str, noise_floor: str) -> None:
    names = ["c0", "c1", "c2", "c3", "n0", "n1"]
    config = DriftConfig(metric=metric, windows=5, noise_floor=noise_floor)
    categorical, numerical = _stream(50_000, 4)
    stable = measure_drift(categorical, numerical, config, feature_names=names, vocab_sizes=[30] * 4)
    moved = numerical.copy()
    moved[30_000:, 1] += 2.0  # n1 moves in the last two windows
    shifted = measure_drift(categorical, moved, config, feature_names=names, vocab_sizes=[30] * 4)
    assert shifted.per_feature[0].name == "n1" and shifted.per_feature[0].kind == "numerical"
    assert shifted.shift > 2 * stable.shift
    pair = shifted.feature("n1").per_pair
    assert int(np.argmax(pair)) == 2  # the jump sits between windows 3 and 4
    cat_moved = categorical.copy()
    cat_moved[25_000:, 2] = (cat_moved[25_000:, 2] + 7) % 30
    cat_shift = measure_drift(cat_moved, numerical, config, feature_names=names, vocab_sizes=[30] * 4)
    assert cat_shift.per_feature[0].name == "c2"


@pytest.mark.parametrize("noise_floor", ["crossed_halves", "none"])
def test_report_aggregates_are_consistent(noise_floor: str) -> None:
    categorical, numerical = _stream(20_000, 5)
    report = measure_drift(categorical, numerical, DriftConfig(windows=4, noise_floor=noise_floor))
    assert report.windows == 4 and report.rows == 20_000 and len(report.per_window_pair) == 3
    assert report.shift == pytest.approx(np.mean(report.per_window_pair))
    assert report.shift == pytest.approx(np.mean([f.mean for f in report.per_feature]))
    means = [f.mean for f in report.per_feature]
    assert means == sorted(means, reverse=True)
    assert {f.name for f in report.per_feature} == {"cat_0", "cat_1", "cat_2", "cat_3", "num_0", "num_1"}
    assert all(len(f.per_pair) == 3 and f.max == max(f.per_pair) for f in report.per_feature)
    assert "Δ_shift" in report.format_table(top=3)
    assert report.raw_shift == pytest.approx(np.mean([f.raw_mean for f in report.per_feature]))
    identical = measure_drift(
        np.zeros((100, 1), np.int64), None, DriftConfig(windows=4, noise_floor=noise_floor), vocab_sizes=[3]
    )
    assert identical.shift == 0.0 and identical.raw_shift == 0.0


def test_bad_input_is_named() -> None:
    categorical = np.zeros((100, 2), np.int64)
    categorical[42, 1] = 9
    with pytest.raises(ValueError, match=r"'b': row 42 has id 9, outside \[0, 5\)"):
        measure_drift(categorical, None, feature_names=["a", "b"], vocab_sizes=[5, 5])
    categorical[42, 1] = -1
    with pytest.raises(ValueError, match=r"'b': row 42 has id -1"):
        measure_drift(categorical, None, feature_names=["a", "b"], vocab_sizes=[5, 5])
    with pytest.raises(ValueError, match="'a' holds float64, not integer ids"):
        measure_drift(np.zeros((100, 1)), None, feature_names=["a"], vocab_sizes=[5])
    numerical = np.zeros((100, 1))
    numerical[7, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        measure_drift(None, numerical)
    with pytest.raises(ValueError, match="cannot fill 10 windows"):
        measure_drift(np.zeros((5, 1), np.int64), None, vocab_sizes=[1])
    with pytest.raises(ValueError, match="3 feature names"):
        measure_drift(np.zeros((50, 1), np.int64), np.zeros((50, 1)), feature_names=["a", "b", "c"], vocab_sizes=[1])
    with pytest.raises(ValidationError):
        DriftConfig(metrc="kl")
    with pytest.raises(ValidationError):
        DriftConfig(windows=1)
