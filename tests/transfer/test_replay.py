"""Adaptive replay (Eq. 14-15): the ratio's branches, draws, and the rolling stream estimate."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from crossadapt.transfer.drift.detector import DriftConfig, HistogramBinner, measure_drift
from crossadapt.transfer.online.replay import ReplayConfig, ReplayController, replay_ratio


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (0.0, 0.1),  # stable
        (0.01, 0.1),  # θ_low belongs to the stable branch (Δ <= θ_low)
        (0.010001, 0.1 * (1 - 0.010001 / 0.05)),  # just above θ_low: moderate branch (jumps to ~0.08)
        (0.03, 0.1 * (1 - 0.6)),
        (0.05, 0.0),  # θ_high is in the moderate branch: k * (1 - 1) = 0
        (0.0500001, 0.0),  # major shift
        (0.7, 0.0),
    ],
)
def test_replay_ratio_branches_and_boundaries(shift: float, expected: float) -> None:
    assert replay_ratio(shift) == pytest.approx(expected, abs=1e-15)


def test_replay_ratio_custom_parameters_and_bad_input() -> None:
    assert replay_ratio(0.15, theta_low=0.1, theta_high=0.2, k=0.5) == pytest.approx(0.5 * 0.25)
    assert replay_ratio(0.1, theta_low=0.1, theta_high=0.2, k=0.5) == 0.5
    with pytest.raises(ValueError, match="shift"):
        replay_ratio(float("nan"))
    with pytest.raises(ValueError, match="theta_low"):
        replay_ratio(0.0, theta_low=0.05, theta_high=0.01)
    with pytest.raises(ValidationError, match="theta_low"):
        ReplayConfig(theta_low=0.05, theta_high=0.05)
    with pytest.raises(ValidationError):
        ReplayConfig(max_raito=0.2)


def test_draw_count_range_determinism_and_scale() -> None:
    controller = ReplayController(ReplayConfig(), pool_size=1_000_000, seed=3, initial_shift=0.0)
    assert controller.ratio == 0.1
    drawn = controller.draw(4096)
    assert len(drawn) == 410  # round(0.1 * 4096) = round(409.6)
    assert drawn.dtype == np.int64 and (np.diff(drawn) > 0).all() and drawn[-1] < 1_000_000
    again = ReplayController(ReplayConfig(), pool_size=1_000_000, seed=3, initial_shift=0.0).draw(4096)
    np.testing.assert_array_equal(drawn, again)
    moderate = ReplayController(ReplayConfig(), pool_size=100, seed=0, initial_shift=0.03)
    assert len(moderate.draw(1_000)) == 40
    controller.set_ratio_scale(0.5)
    assert controller.ratio == pytest.approx(0.05) and len(controller.draw(4096)) == 205
    controller.set_ratio_scale(0.0)
    assert len(controller.draw(4096)) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        controller.set_ratio_scale(1.5)
    assert [h.reason for h in controller.history] == ["initial", "scale", "scale"]
    tiny_pool = ReplayController(ReplayConfig(max_ratio=2.0), pool_size=5, seed=0, initial_shift=0.0)
    assert len(tiny_pool.draw(10)) == 20  # more than the pool: with replacement
    major = ReplayController(ReplayConfig(), pool_size=100, seed=0, initial_shift=0.2)
    assert len(major.draw(4096)) == 0


def test_controller_requires_what_its_mode_needs() -> None:
    with pytest.raises(ValueError, match="initial_shift"):
        ReplayController(ReplayConfig(), pool_size=10)
    with pytest.raises(ValueError, match="HistogramBinner"):
        ReplayController(ReplayConfig(rolling=True), pool_size=10, initial_shift=0.0)
    fixed = ReplayController(ReplayConfig(), pool_size=10, initial_shift=0.0)
    with pytest.raises(RuntimeError, match="rolling"):
        fixed.observe(np.zeros((4, 1), np.int64), None)


def _batch(rng: np.random.Generator, rows: int, shifted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    categorical = rng.integers(0, 20, (rows, 3))
    numerical = rng.normal(size=(rows, 2))
    if shifted:  # one categorical field moves to disjoint ids
        categorical[:, 1] = rng.integers(20, 40, rows)
    return categorical, numerical


ROLLING = ReplayConfig(rolling=True, window_rows=5_000, drift=DriftConfig(windows=4, bins=20))


def _rolling_controller(seed: int = 0) -> ReplayController:
    rng = np.random.default_rng(100 + seed)
    pool_cat, pool_num = _batch(rng, 40_000)
    return ReplayController.from_training_pool(ROLLING, pool_cat, pool_num, seed=seed, vocab_sizes=[20, 40, 20])


def test_from_training_pool_measures_the_pool() -> None:
    controller = _rolling_controller()
    assert controller.initial_report is not None and controller.pool_size == 40_000
    assert controller.shift == controller.initial_report.shift < 0.01
    assert controller.ratio == 0.1


def test_rolling_drops_on_a_planted_shift_and_recovers() -> None:
    controller = _rolling_controller()
    rng = np.random.default_rng(7)
    ratios = []
    for step in range(40):  # 40 batches of 2,000 rows = 16 windows; the shift starts at window 6
        ratios.append(controller.observe(*_batch(rng, 2_000, shifted=step >= 15)))
    windows = [h for h in controller.history if h.reason == "window"]
    assert len(windows) == 15  # 16 windows, 15 adjacent pairs
    by_window = [h.ratio for h in windows]
    assert by_window[:4] == [0.1] * 4  # stable stream: full replay
    assert by_window[5] == 0.0  # the pair across the shift pushes Δ_shift over θ_high: replay stops
    assert windows[5].shift > 0.05
    assert by_window[-1] == 0.1  # three stable pairs later the jump left the buffer: replay is back
    assert max(by_window[5:8]) == 0.0 and min(ratios) == 0.0
    report = controller.rolling_report()
    assert report is not None and report.windows == 4 and report.shift == pytest.approx(windows[-1].shift)


@pytest.mark.parametrize("noise_floor", ["crossed_halves", "none"])
def test_rolling_estimate_equals_batch_measurement_of_the_last_windows(noise_floor: str) -> None:
    """Incremental histograms fed in uneven batches give exactly Eq. 13 over the last n windows (and the
    same noise floor: the rolling halves are the ones measure_drift uses)."""
    config = ROLLING.model_copy(update={"drift": ROLLING.drift.model_copy(update={"noise_floor": noise_floor})})
    pool_cat, pool_num = _batch(np.random.default_rng(100), 40_000)
    controller = ReplayController.from_training_pool(config, pool_cat, pool_num, seed=0, vocab_sizes=[20, 40, 20])
    rng = np.random.default_rng(8)
    parts = [_batch(rng, rows) for rows in (1_234, 7_000, 3_333, 12_433)]  # 24,000 rows = 4 full windows + 4k
    for categorical, numerical in parts:
        controller.observe(categorical, numerical)
    categorical = np.concatenate([p[0] for p in parts])[:20_000]
    numerical = np.concatenate([p[1] for p in parts])[:20_000]
    batch = measure_drift(categorical, numerical, config.drift, binner=controller.binner)
    assert controller.shift == pytest.approx(batch.shift, rel=1e-12)
    rolling = controller.rolling_report()
    assert rolling is not None and rolling.raw_shift == pytest.approx(batch.raw_shift, rel=1e-12)
    assert rolling.noise_floor == noise_floor
    assert controller.history[-1].rows == 20_000 and controller.history[-1].windows == 4


def test_state_dict_resumes_exactly() -> None:
    rng = np.random.default_rng(9)
    batches = [_batch(rng, 3_000, shifted=i >= 6) for i in range(12)]
    straight = _rolling_controller(seed=1)
    resumed = _rolling_controller(seed=1)
    for batch in batches[:5]:
        straight.observe(*batch)
        resumed.observe(*batch)
    state = resumed.state_dict()
    fresh = _rolling_controller(seed=1)
    fresh.load_state_dict(state)
    for batch in batches[5:]:
        assert straight.observe(*batch) == fresh.observe(*batch)
        np.testing.assert_array_equal(straight.draw(1_000), fresh.draw(1_000))
    assert straight.history == fresh.history
    other_layout = ReplayController(
        ROLLING, 10, initial_shift=0.0, binner=HistogramBinner([3], [])
    )
    with pytest.raises(ValueError, match="histogram slots"):
        other_layout.load_state_dict(state)
