"""Noise floor of shift detection: stationary high-cardinality data reads as stationary, real shifts keep
their size, halves are counted consistently, and rolling replay keeps replaying on stable streams."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from crossadapt.transfer.drift.divergence import js_divergence
from crossadapt.transfer.drift.detector import DriftConfig, measure_drift
from crossadapt.transfer.drift.histogram import HistogramBinner, half_of_rows, window_bounds
from crossadapt.transfer.online.replay import ReplayConfig, ReplayController


def _zipf(vocab: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, vocab + 1) ** exponent
    return weights / weights.sum()


def _draw(rng: np.random.Generator, pmf: np.ndarray, rows: int) -> np.ndarray:
    """rows ids drawn from pmf -> [rows, 1] int32 (one categorical field)."""
    cdf = np.cumsum(pmf)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(rows), side="right").astype(np.int32)[:, None]


@pytest.mark.parametrize(
    ("vocab", "window_rows", "exponent"),
    [(10_000, 20_000, 1.0), (50_000, 50_000, 1.2), (200_000, 20_000, 1.0), (200_000, 200_000, 1.0)],
)
def test_stationary_high_cardinality_reads_stationary_only_with_the_floor(
    vocab: int, window_rows: int, exponent: float
) -> None:
    ids = _draw(np.random.default_rng(vocab + window_rows), _zipf(vocab, exponent), 4 * window_rows)
    corrected = measure_drift(ids, None, DriftConfig(windows=4), vocab_sizes=[vocab])
    raw = measure_drift(ids, None, DriftConfig(windows=4, noise_floor="none"), vocab_sizes=[vocab])
    assert raw.shift > 0.01  # the plug-in estimate alone calls unchanging data a shift (0.09 .. 0.35 here)
    assert corrected.shift < 0.005  # well below θ_low = 0.01
    assert corrected.raw_shift == pytest.approx(raw.shift, rel=1e-9)  # same raw value either way
    assert corrected.floor == pytest.approx(raw.shift, rel=0.05)  # the floor explains the raw value


@pytest.mark.parametrize("metric", ["kl", "wasserstein"])
def test_floor_works_for_every_metric(metric: str) -> None:
    vocab, window_rows = 50_000, 20_000
    ids = _draw(np.random.default_rng(3), _zipf(vocab), 4 * window_rows)
    report = measure_drift(ids, None, DriftConfig(metric=metric, windows=4), vocab_sizes=[vocab])
    assert report.shift < 0.1 * report.raw_shift
    assert report.shift < (0.02 if metric == "kl" else 0.0005)  # raw: KL 1.03 nats, W1 0.0021


@pytest.mark.parametrize(("vocab", "window_rows"), [(10_000, 20_000), (200_000, 50_000)])
def test_planted_shift_keeps_its_size(vocab: int, window_rows: int) -> None:
    """The 300 most popular ids swap popularity between windows 2 and 3: the corrected pair reads the true
    JS of the two populations, the raw one reads far more, and the stable pairs read ≈ 0."""
    rng = np.random.default_rng(vocab)
    before = _zipf(vocab)
    after = before.copy()
    after[:300] = before[:300][rng.permutation(300)]
    true = js_divergence(before, after)
    ids = np.concatenate([_draw(rng, before, 2 * window_rows), _draw(rng, after, 2 * window_rows)])
    report = measure_drift(ids, None, DriftConfig(windows=4), vocab_sizes=[vocab])
    pairs = report.per_feature[0].per_pair
    assert pairs[1] == pytest.approx(true, rel=0.1)
    assert report.per_feature[0].raw_per_pair[1] > true + 0.1
    assert max(pairs[0], pairs[2]) < 0.01
    assert report.shift > 0.05  # one major shift in three pairs still switches replay off


def test_gradual_drift_is_not_absorbed_by_the_floor() -> None:
    """Halves interleave runs across each window, so drift inside a window does not leak into the floor."""
    vocab, window_rows, windows = 10_000, 50_000, 4
    rng = np.random.default_rng(11)
    start = _zipf(vocab)
    end = np.roll(start, 50)
    rows = windows * window_rows
    towards_end = rng.random(rows) < (np.arange(rows) + 0.5) / rows  # mixture weight moves linearly 0 -> 1
    ids = np.where(towards_end[:, None], _draw(rng, end, rows), _draw(rng, start, rows))
    centre = (np.arange(windows) + 0.5) / windows
    true = np.mean([js_divergence((1 - a) * start + a * end, (1 - b) * start + b * end) for a, b in zip(centre, centre[1:])])
    report = measure_drift(ids, None, DriftConfig(windows=windows), vocab_sizes=[vocab])
    assert report.shift == pytest.approx(true, rel=0.2)  # true 0.021; raw reads 0.10


def test_rows_that_arrive_together_stay_in_one_half() -> None:
    """Ids repeated in runs of 4 rows (one page view's impressions): runs of rows keep the floor right;
    alternate rows (one row per run) would put each repeat in both halves and cancel nothing."""
    ids = np.repeat(_draw(np.random.default_rng(12), _zipf(10_000), 20_000), 4, axis=0)  # 4 windows of 20k
    runs = measure_drift(ids, None, DriftConfig(windows=4), vocab_sizes=[10_000])
    alternate = measure_drift(ids, None, DriftConfig(windows=4, floor_runs=10**9), vocab_sizes=[10_000])
    assert runs.raw_shift > 0.2 and runs.shift < 0.01
    assert alternate.shift > 0.2


def test_half_counts_follow_half_of_rows_and_add_up() -> None:
    rng = np.random.default_rng(13)
    categorical = rng.integers(0, 7, (1_003, 2))
    numerical = rng.normal(size=(1_003, 1))
    numerical[::17] = np.nan
    binner = HistogramBinner.fit(numerical, [7, 7], bins=5)
    bounds = window_bounds(1_003, 3)
    halves = binner.half_counts(categorical, numerical, bounds, runs=4)
    assert halves.shape == (3, 2, binner.total_slots)
    np.testing.assert_array_equal(halves.sum(axis=1), binner.counts(categorical, numerical, bounds))
    slots = binner.slot_ids(categorical, numerical)
    for w, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        half = half_of_rows(np.arange(hi - lo), hi - lo, 4)
        for h in (0, 1):
            expected = np.bincount(slots[lo:hi][half == h].ravel(), minlength=binner.total_slots)
            np.testing.assert_array_equal(halves[w, h], expected)
        sizes = np.bincount(half, minlength=2)
        assert abs(sizes[0] - sizes[1]) <= 4  # balanced up to one row per run
    np.testing.assert_array_equal(half_of_rows(np.arange(6), 6, 16), [0, 1, 0, 1, 0, 1])  # few rows: one per run
    with pytest.raises(ValueError, match="cannot be split"):
        half_of_rows(np.arange(1), 1, 16)


def test_report_carries_raw_and_floor_figures() -> None:
    ids = _draw(np.random.default_rng(14), _zipf(20_000), 40_000)
    report = measure_drift(ids, np.zeros((40_000, 1)), DriftConfig(windows=4), vocab_sizes=[20_000], feature_names=["ad", "x"])
    assert report.noise_floor == "crossed_halves" and report.floor is not None
    for entry in report.per_feature:
        raw, floor = np.array(entry.raw_per_pair), np.array(entry.per_pair)
        assert entry.raw_mean == pytest.approx(raw.mean()) and entry.floor_mean is not None
        assert (floor >= 0).all() and (floor <= raw + 1e-12).all()
    assert report.raw_shift == pytest.approx(np.mean([e.raw_mean for e in report.per_feature]))
    assert report.shift == pytest.approx(np.mean(report.per_window_pair))
    table = report.format_table()
    assert "raw" in table and "floor" in table and "crossed_halves" in table
    plain = measure_drift(ids, None, DriftConfig(windows=4, noise_floor="none"), vocab_sizes=[20_000])
    assert plain.floor is None and plain.raw_shift == plain.shift and plain.per_feature[0].floor_mean is None
    assert "floor" not in plain.format_table()


def test_bad_floor_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="too small to split"):
        measure_drift(np.zeros((15, 1), np.int64), None, DriftConfig(windows=10), vocab_sizes=[1])
    measure_drift(np.zeros((15, 1), np.int64), None, DriftConfig(windows=10, noise_floor="none"), vocab_sizes=[1])
    with pytest.raises(ValidationError):
        DriftConfig(noise_floor="split")
    with pytest.raises(ValidationError):
        DriftConfig(floor_runs=0)
    with pytest.raises(ValidationError, match="window_rows"):
        ReplayConfig(rolling=True, window_rows=1)


def _stream_controller(noise_floor: str, pool: np.ndarray, vocab: int) -> ReplayController:
    config = ReplayConfig(rolling=True, window_rows=20_000, drift=DriftConfig(windows=4, noise_floor=noise_floor))
    return ReplayController.from_training_pool(config, pool, None, seed=0, vocab_sizes=[vocab])


def test_rolling_replay_keeps_replaying_on_a_stationary_high_cardinality_stream() -> None:
    vocab = 200_000
    rng = np.random.default_rng(15)
    pmf = _zipf(vocab)
    pool, stream = _draw(rng, pmf, 80_000), _draw(rng, pmf, 120_000)
    corrected, raw = _stream_controller("crossed_halves", pool, vocab), _stream_controller("none", pool, vocab)
    assert corrected.ratio == 0.1 and raw.ratio == 0.0  # the pool's own Δ_shift: 0.00x vs 0.35
    for start in range(0, len(stream), 7_000):  # uneven batches across window ends
        corrected.observe(stream[start : start + 7_000], None)
        raw.observe(stream[start : start + 7_000], None)
    windows = [h for h in corrected.history if h.reason == "window"]
    assert len(windows) == 5 and all(h.ratio == 0.1 and h.shift < 0.01 for h in windows)  # r_enh = k throughout
    assert all(h.ratio == 0.0 for h in raw.history if h.reason == "window")  # uncorrected: replay stays off
    report = corrected.rolling_report()
    assert report is not None and report.floor is not None and report.raw_shift > 0.3 > 0.01 > report.shift
    batch = measure_drift(stream[40_000:120_000], None, corrected.config.drift, binner=corrected.binner)
    assert report.shift == pytest.approx(batch.shift, rel=1e-12)  # the last 4 windows, measured at once


def test_state_from_before_the_floor_still_resumes() -> None:
    """A state saved without half histograms loads; the window open at the save takes part in no pair."""
    rng = np.random.default_rng(16)
    pmf = _zipf(1_000)
    controller = _stream_controller("crossed_halves", _draw(rng, pmf, 80_000), 1_000)
    controller.observe(_draw(rng, pmf, 50_000), None)  # 2.5 windows: one pair
    state = controller.state_dict()
    for key in ("halves", "open_unsplit", "last_halves", "raw_pairs", "floor_pairs"):
        del state[key]
    resumed = _stream_controller("crossed_halves", _draw(rng, pmf, 80_000), 1_000)
    resumed.load_state_dict(state)
    resumed.observe(_draw(rng, pmf, 50_000), None)  # closes windows 3 (open at the save), 4 and 5
    windows = [h.windows for h in resumed.history if h.reason == "window"]
    assert windows == [2, 5]  # pairs (3, 4) and (2, 3) need the halves of window 3: skipped
    assert resumed.ratio == 0.1
