"""Strategic sampling (Eq. 7-9): quotas, oversampling, empty blocks, report, determinism, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from crossadapt.transfer.offline.sampling import (
    SamplingConfig,
    StrategicSampler,
    assemble_pcvr_sample,
    augment_unclicked,
)


def _labels(rows: int, rate: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(rows) < rate).astype(np.float32)


def _block_of(positions: np.ndarray, rows: int, blocks: int) -> np.ndarray:
    """Block of each time position for equal-count blocks (same cut as the sampler)."""
    bounds = (np.arange(blocks + 1) * rows) // blocks
    return np.searchsorted(bounds, positions, side="right") - 1


def _check_report_sums(result, label: np.ndarray) -> None:
    report = result.report
    assert len(result.indices) == report.total_rows
    assert report.total_rows == report.positives + report.negatives
    assert sum(b.drawn_pos for b in report.blocks) == report.positives
    assert sum(b.drawn_neg for b in report.blocks) == report.negatives
    assert sum(b.shortfall_pos for b in report.blocks) == report.shortfall_pos
    assert sum(b.shortfall_neg for b in report.blocks) == report.shortfall_neg
    assert int(label[result.indices].sum()) == report.positives
    assert report.unique_rows == len(np.unique(result.indices))
    assert report.effective_ratio == pytest.approx(report.total_rows / report.source_rows)


def test_quotas_exact_without_replacement_when_blocks_are_rich() -> None:
    rows = 100_000
    label = _labels(rows, 0.3)
    result = StrategicSampler(SamplingConfig(ratio=0.1, positive_ratio=0.5, temporal_blocks=10)).sample(label)
    report = result.report
    assert report.total_rows == 10_000 and report.positives == 5_000 and report.negatives == 5_000
    assert len(np.unique(result.indices)) == 10_000  # no duplicates anywhere
    blocks = _block_of(result.indices, rows, 10)
    per_block_pos = np.bincount(blocks, weights=label[result.indices], minlength=10)
    per_block_all = np.bincount(blocks, minlength=10)
    assert (per_block_pos == 500).all() and (per_block_all == 1_000).all()
    assert not any(b.pos_with_replacement for b in report.blocks)
    assert report.positive_rate == pytest.approx(0.5)
    _check_report_sums(result, label)


def test_uneven_totals_are_exact_and_leftovers_go_to_recent_blocks() -> None:
    label = _labels(10_007, 0.4)
    result = StrategicSampler(SamplingConfig(ratio=0.1, positive_ratio=0.3, temporal_blocks=7)).sample(label)
    report = result.report
    assert report.total_rows == round(0.1 * 10_007) == 1_001
    assert report.positives == 300  # round(0.1 * 0.3 * 10007) = round(300.21)
    quotas = [b.quota_pos for b in report.blocks]
    assert quotas == sorted(quotas) and max(quotas) - min(quotas) == 1  # extras on the most recent blocks


def test_oversamples_only_positives_and_only_where_a_block_lacks_them() -> None:
    rows, blocks = 20_000, 4
    label = np.zeros(rows, np.float32)
    label[np.random.default_rng(1).choice(np.arange(5_000, rows), 3_000, replace=False)] = 1  # rich blocks 1-3
    label[[10, 20, 30]] = 1  # block 0: three positives, quota 250
    result = StrategicSampler(SamplingConfig(ratio=0.1, positive_ratio=0.5, temporal_blocks=blocks)).sample(label)
    report = result.report
    assert [b.pos_with_replacement for b in report.blocks] == [True, False, False, False]
    assert report.blocks[0].drawn_pos == 250 and report.blocks[0].available_pos == 3
    picked, counts = np.unique(result.indices, return_counts=True)
    duplicated = picked[counts > 1]
    assert set(duplicated.tolist()) <= {10, 20, 30}  # only block 0's positives repeat
    assert {10, 20, 30} <= set(picked.tolist())  # every scarce positive kept at least once
    negatives = result.indices[label[result.indices] == 0]
    assert len(np.unique(negatives)) == len(negatives) == 1_000
    _check_report_sums(result, label)


def test_block_without_positives_is_redistributed() -> None:
    rows = 10_000
    label = _labels(rows, 0.2, seed=3)
    label[:1_000] = 0  # block 0 (of 10) has no positives
    result = StrategicSampler(SamplingConfig(ratio=0.1, temporal_blocks=10)).sample(label)
    report = result.report
    assert report.blocks[0].drawn_pos == 0 and report.blocks[0].drawn_neg == 50
    assert report.positives == 500 and report.shortfall_pos == 0  # its 50 moved to blocks 1..9
    assert all(b.drawn_pos > 50 for b in report.blocks[1:])
    assert not any(b.pos_with_replacement for b in report.blocks)  # spare positives existed
    assert any("no positives" in note for note in report.notes)
    _check_report_sums(result, label)


def test_block_without_positives_under_shortfall_policy() -> None:
    label = _labels(10_000, 0.2, seed=3)
    label[:1_000] = 0
    config = SamplingConfig(ratio=0.1, temporal_blocks=10, empty_block_policy="shortfall")
    result = StrategicSampler(config).sample(label)
    report = result.report
    assert report.positives == 450 and report.shortfall_pos == 50
    assert report.blocks[0].shortfall_pos == 50 and report.blocks[0].quota_pos == 0
    _check_report_sums(result, label)


def test_block_without_negatives_gives_nothing_and_others_cover_it() -> None:
    label = _labels(10_000, 0.2, seed=4)
    label[9_000:] = 1  # the last block is all positives
    result = StrategicSampler(SamplingConfig(ratio=0.1, temporal_blocks=10)).sample(label)
    report = result.report
    assert report.blocks[-1].drawn_neg == 0
    assert report.negatives == 500 and report.shortfall_neg == 0
    negatives = result.indices[label[result.indices] == 0]
    assert len(np.unique(negatives)) == len(negatives)  # negatives never oversampled
    _check_report_sums(result, label)


def test_no_positives_at_all_is_reported_not_raised() -> None:
    label = np.zeros(5_000, np.float32)
    result = StrategicSampler(SamplingConfig(ratio=0.1, temporal_blocks=5)).sample(label)
    report = result.report
    assert report.positives == 0 and report.shortfall_pos == 250 and report.negatives == 250
    assert any("no positives in any block" in note for note in report.notes)
    _check_report_sums(result, label)


def test_too_few_negatives_overall_takes_all_and_reports_shortfall() -> None:
    label = np.ones(1_000, np.float32)
    label[[5, 500, 900]] = 0
    result = StrategicSampler(SamplingConfig(ratio=0.5, temporal_blocks=4)).sample(label)
    report = result.report
    assert report.negatives == 3 and report.shortfall_neg == 250 - 3
    assert set(result.indices[label[result.indices] == 0].tolist()) == {5, 500, 900}
    _check_report_sums(result, label)


def test_deterministic_for_a_seed() -> None:
    label = _labels(50_000, 0.05)
    first = StrategicSampler(SamplingConfig(seed=7)).sample(label)
    again = StrategicSampler(SamplingConfig(seed=7)).sample(label)
    other = StrategicSampler(SamplingConfig(seed=8)).sample(label)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert first.report == again.report
    assert not np.array_equal(first.indices, other.indices)


def test_temporal_spread_follows_timestamps_not_row_order() -> None:
    rows, blocks = 40_000, 8
    rng = np.random.default_rng(5)
    timestamp = rng.permutation(rows).astype(np.int64) * 10  # rows are NOT in time order
    label = _labels(rows, 0.1, seed=6)
    result = StrategicSampler(SamplingConfig(ratio=0.05, temporal_blocks=blocks)).sample(label, timestamp)
    times = timestamp[result.indices]
    assert (np.diff(times) >= 0).all()  # indices sorted by time
    rank = times // 10  # time position of each drawn row
    contributed = np.bincount(_block_of(rank, rows, blocks), minlength=blocks)
    assert (contributed == 250).all()  # every temporal block gives its share
    pos_per_block = np.bincount(_block_of(rank, rows, blocks), weights=label[result.indices], minlength=blocks)
    assert (pos_per_block == 125).all()


def test_ablation_switches() -> None:
    label = _labels(20_000, 0.05, seed=2)
    one_block = StrategicSampler(SamplingConfig(temporal=False)).sample(label)
    assert len(one_block.report.blocks) == 1 and one_block.report.positives == 1_000
    natural = StrategicSampler(SamplingConfig(balanced=False, ratio=0.2)).sample(label)
    report = natural.report
    assert report.total_rows == 4_000 and len(np.unique(natural.indices)) == 4_000
    assert report.positive_rate == pytest.approx(label.mean(), abs=0.015)  # natural rate, not 50%
    assert [b.drawn_pos + b.drawn_neg for b in report.blocks] == [400] * 10
    _check_report_sums(natural, label)


def test_unbalanced_quota_never_exceeds_a_block() -> None:
    label = _labels(10, 0.5)
    result = StrategicSampler(SamplingConfig(balanced=False, ratio=1.0, temporal_blocks=4)).sample(label)
    np.testing.assert_array_equal(result.indices, np.arange(10))


def test_candidates_restrict_the_pool_and_keep_global_row_ids() -> None:
    click = _labels(20_000, 0.2, seed=8)
    conversion = click * _labels(20_000, 0.3, seed=9)
    clicked = np.flatnonzero(click)
    result = StrategicSampler(SamplingConfig(ratio=0.2, temporal_blocks=5)).sample(conversion, candidates=clicked)
    assert set(result.indices.tolist()) <= set(clicked.tolist())
    assert result.report.source_rows == len(clicked)
    conversion[click == 0] = np.nan  # undefined where nobody clicked: never read
    again = StrategicSampler(SamplingConfig(ratio=0.2, temporal_blocks=5)).sample(conversion, candidates=clicked)
    np.testing.assert_array_equal(again.indices, result.indices)
    conversion[clicked[3]] = 0.5
    with pytest.raises(ValueError, match=rf"label\[{clicked[3]}\] = 0.5"):
        StrategicSampler(SamplingConfig(ratio=0.2, temporal_blocks=5)).sample(conversion, candidates=clicked)


def test_bad_input_is_named() -> None:
    label = np.array([0, 1, 2, 0], np.float32)
    with pytest.raises(ValueError, match=r"label\[2\] = 2.0:"):
        StrategicSampler(SamplingConfig(temporal_blocks=2)).sample(label)
    with pytest.raises(ValueError, match="temporal blocks"):
        StrategicSampler(SamplingConfig(temporal_blocks=10)).sample(np.zeros(5, np.float32))
    with pytest.raises(ValidationError):
        SamplingConfig(ratio=0.1, postive_ratio=0.5)  # typo rejected
    with pytest.raises(ValidationError):
        SamplingConfig(ratio=1.5)


# --------------------------------------------------------------------------- unclicked augmentation (Eq. 9)


def test_augment_unclicked_ratio_and_rows() -> None:
    click = _labels(10_000, 0.1, seed=10)
    clicked_sample = np.flatnonzero(click)[:200]
    unclicked = augment_unclicked(clicked_sample, click, r_unclick=1.5, seed=0)
    assert len(unclicked) == 300 and len(np.unique(unclicked)) == 300
    assert (click[unclicked] == 0).all() and (np.diff(unclicked) > 0).all()
    np.testing.assert_array_equal(unclicked, augment_unclicked(clicked_sample, click, 1.5, seed=0))
    assert len(augment_unclicked(clicked_sample, click, 0.0)) == 0
    everything = augment_unclicked(clicked_sample, click, 1_000.0)  # asks for more than exist: all of them
    np.testing.assert_array_equal(everything, np.flatnonzero(click == 0))


def test_sampler_augment_uses_config_ratio() -> None:
    click = _labels(10_000, 0.2, seed=11)
    conversion = click * _labels(10_000, 0.3, seed=12)
    sampler = StrategicSampler(SamplingConfig(ratio=0.5, temporal_blocks=5, unclicked_ratio=2.0))
    sample = sampler.sample(conversion, candidates=np.flatnonzero(click))
    unclicked = sampler.augment_unclicked(sample, click)
    assert len(unclicked) == round(2.0 * sample.report.total_rows)


def test_augment_rejects_unclicked_rows_in_the_clicked_sample() -> None:
    click = np.array([1, 0, 1, 0, 0], np.float32)
    with pytest.raises(ValueError, match=r"clicked_indices\[1\] = row 1"):
        augment_unclicked(np.array([0, 1]), click, 1.0)
    with pytest.raises(ValueError, match="r_unclick"):
        augment_unclicked(np.array([0]), click, -1.0)


def test_assemble_pcvr_sample_soft_labels_and_validation() -> None:
    conversion = np.array([1, 0, 0, 0, 1, 0], np.float32)
    clicked, unclicked = np.array([0, 1, 4]), np.array([2, 5])
    sample = assemble_pcvr_sample(clicked, conversion, unclicked, np.array([0.25, 0.0]))
    np.testing.assert_array_equal(sample.indices, [0, 1, 4, 2, 5])
    np.testing.assert_allclose(sample.labels, [1, 0, 1, 0.25, 0.0])
    np.testing.assert_array_equal(sample.pseudo, [False, False, False, True, True])
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        assemble_pcvr_sample(clicked, conversion, unclicked, np.array([0.5]))
    with pytest.raises(ValueError, match=r"teacher_pcvr\[1\] = nan \(row 5\)"):
        assemble_pcvr_sample(clicked, conversion, unclicked, np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match=r"teacher_pcvr\[0\] = 1.5"):
        assemble_pcvr_sample(clicked, conversion, unclicked, np.array([1.5, 0.1]))
