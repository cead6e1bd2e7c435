"""Strategic distillation sample selection (paper Sec. 3.1.3, Eq. 7-9, Algorithm 1 lines 10-15).

One fixed sample D'_train per run (seeded): the rows are cut into K temporal blocks of equal row count
(time order), and each block k contributes quotas of positives and negatives (Eq. 8):

    n_pos = r * r_pos * |D| / K        n_neg = r * (1 - r_pos) * |D| / K

Choices the paper leaves open:
- Totals are rounded once (half up): round(r*r_pos*|D|) positives and round(r*|D|) minus that many
  negatives, split over the blocks as evenly as possible; the leftover rows go to the most recent
  blocks (recent behaviour matters most for the switch).
- A block with enough rows of a class is sampled without replacement. A block with some positives but
  fewer than its quota keeps every positive once and draws the rest WITH replacement (class-balanced
  oversampling, Eq. 7). Negatives are never oversampled: a block short of negatives gives all it has.
- `empty_block_policy="redistribute"` (default): the positive quota of a block without positives and the
  unmet negative quota of blocks short of negatives move to other blocks, spare rows first, spread
  evenly so every block keeps contributing; positives that find no spare rows are oversampled evenly in
  the blocks that have positives. What cannot be placed anywhere is a shortfall.
  `"shortfall"`: nothing moves; every unmet quota is a shortfall. Either way the report says so.
- Ablations: `temporal=False` uses one block; `balanced=False` draws a uniform r-sample per block
  (without replacement), keeping the natural positive rate.

Unclicked-sample augmentation for pCVR (Eq. 9) lives in `crossadapt.transfer.offline.unclicked`
(`augment_unclicked`, `assemble_pcvr_sample`, `PcvrSample`); they are re-exported here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from crossadapt.transfer.offline.sample_report import BlockReport, SampleReport, build_sample_report
from crossadapt.transfer.offline.unclicked import (  # noqa: F401  (PcvrSample & co. re-exported: part of the sampler's API)
    PcvrSample,
    _binary_labels,
    _round_half_up,
    assemble_pcvr_sample,
    augment_unclicked,
)

__all__ = [
    "BlockReport",
    "PcvrSample",
    "SampleReport",
    "SampleResult",
    "SamplingConfig",
    "StrategicSampler",
    "assemble_pcvr_sample",
    "augment_unclicked",
]


class SamplingConfig(BaseModel):
    """Strategic sampling settings (paper defaults: r=0.1, r_pos=0.5, K=10)."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(0.1, gt=0.0, le=1.0, description="r: sample size as a fraction of |D_train|.")
    positive_ratio: float = Field(0.5, ge=0.0, le=1.0, description="r_pos: target positive rate of the sample.")
    temporal_blocks: int = Field(10, ge=1, description="K: equal-size temporal blocks.")
    unclicked_ratio: float = Field(0.0, ge=0.0, description="r_unclick: unclicked rows per sampled clicked row.")
    seed: int = 0
    temporal: bool = Field(True, description="False: one block (ablation 'w/o temporal diversity').")
    balanced: bool = Field(True, description="False: uniform r-sample, natural positive rate (ablation).")
    empty_block_policy: Literal["redistribute", "shortfall"] = "redistribute"


class SampleResult(BaseModel):
    """`indices` [n'] int64 row ids into the input, sorted by time (oversampled rows repeat)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    indices: np.ndarray
    report: SampleReport


# --------------------------------------------------------------------------- helpers


def _split_evenly(total: int, parts: int) -> np.ndarray:
    """`total` as `parts` near-equal ints; the remainder goes to the last (most recent) parts."""
    shares = np.full(parts, total // parts, dtype=np.int64)
    extra = total - int(shares.sum())
    if extra:
        shares[parts - extra :] += 1
    return shares


def _spread(deficit: int, capacity: np.ndarray) -> tuple[np.ndarray, int]:
    """Place `deficit` rows evenly over blocks with capacity left (water filling) -> (added [K], leftover)."""
    capacity = capacity.astype(np.int64).copy()
    added = np.zeros_like(capacity)
    # Each pass either places everything or exhausts at least one block, so it ends within K passes.
    while deficit > 0 and (capacity > 0).any():
        eligible = np.flatnonzero(capacity > 0)
        take = np.minimum(_split_evenly(deficit, len(eligible)), capacity[eligible])
        added[eligible] += take
        capacity[eligible] -= take
        deficit -= int(take.sum())
    return added, deficit


def _block_bounds(rows: int, blocks: int) -> np.ndarray:
    """[K+1] start positions of K equal-count blocks over `rows` time-ordered rows."""
    return (np.arange(blocks + 1, dtype=np.int64) * rows) // blocks


# --------------------------------------------------------------------------- the sampler


class StrategicSampler:
    """Draws D'_train (Eq. 7-8). Vectorised per block: no per-row Python.

    Example::

        result = StrategicSampler(SamplingConfig(ratio=0.1, positive_ratio=0.5)).sample(label, timestamp)
        sample = train_arrays.take(result.indices)
        print(result.report.format_table())
    """

    def __init__(self, config: SamplingConfig | None = None) -> None:
        self.config = config or SamplingConfig()

    def sample(
        self,
        label: np.ndarray,
        timestamp: np.ndarray | None = None,
        *,
        candidates: np.ndarray | None = None,
    ) -> SampleResult:
        """label [n] 0/1; timestamp [n] int64 or None (rows already in time order).

        `candidates` [m] restricts sampling to those row ids (e.g. the clicked rows for pCVR); the
        returned indices are still row ids of the full arrays.
        """
        config = self.config
        label = np.asarray(label)
        if label.ndim != 1:
            raise ValueError(f"label must be 1-D, got shape {label.shape}")
        if timestamp is not None:
            timestamp = np.asarray(timestamp)
            if timestamp.shape != label.shape:
                raise ValueError(f"timestamp has shape {timestamp.shape}, label has {label.shape}")
        # rows [m]: the row id at each time position; None = identity (all rows, already in time order).
        rows = None if candidates is None else np.asarray(candidates, np.int64)
        if rows is not None and rows.size and (rows.min() < 0 or rows.max() >= len(label)):
            raise ValueError(f"candidates must be row ids in [0, {len(label)})")
        if timestamp is not None:
            order = np.argsort(timestamp if rows is None else timestamp[rows], kind="stable")  # ties keep row order
            rows = order if rows is None else rows[order]
        # Only the candidate rows are read (e.g. conversions may be undefined where nobody clicked).
        is_pos = _binary_labels(label if rows is None else label[rows], rows=rows)
        blocks = config.temporal_blocks if config.temporal else 1
        if len(is_pos) < blocks:
            raise ValueError(f"cannot cut {len(is_pos)} rows into {blocks} temporal blocks (temporal_blocks)")
        bounds = _block_bounds(len(is_pos), blocks)
        available_pos = np.array([np.count_nonzero(is_pos[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
        available_neg = np.diff(bounds) - available_pos
        rng = np.random.default_rng(config.seed)
        notes: list[str] = []
        if config.balanced:
            quota_pos, quota_neg, short_pos, short_neg = self._balanced_quotas(
                len(is_pos), available_pos, available_neg, notes
            )
        else:
            # Proportional to block size via rounded cumulative targets: sums to round(r*n), never > a block.
            cumulative = np.floor(config.ratio * bounds + 0.5).astype(np.int64)
            quota_rows = np.diff(cumulative)
            short_pos = short_neg = np.zeros(blocks, dtype=np.int64)
        picked: list[np.ndarray] = []
        drawn_pos = np.zeros(blocks, dtype=np.int64)
        drawn_neg = np.zeros(blocks, dtype=np.int64)
        replaced = np.zeros(blocks, dtype=bool)
        for k in range(blocks):
            start, stop = int(bounds[k]), int(bounds[k + 1])
            if config.balanced:
                block_pos = is_pos[start:stop]
                pos_at, neg_at = start + np.flatnonzero(block_pos), start + np.flatnonzero(~block_pos)
                pos_pick, replaced[k] = _draw(rng, pos_at, int(quota_pos[k]), oversample=True)
                neg_pick, _ = _draw(rng, neg_at, int(quota_neg[k]), oversample=False)
                picked += [pos_pick, neg_pick]
                drawn_pos[k], drawn_neg[k] = len(pos_pick), len(neg_pick)
            else:
                pick = start + rng.choice(stop - start, int(quota_rows[k]), replace=False, shuffle=False)
                picked.append(pick)
                drawn_pos[k] = int(is_pos[pick].sum())
                drawn_neg[k] = len(pick) - drawn_pos[k]
        if not config.balanced:
            quota_pos, quota_neg = drawn_pos, drawn_neg  # uniform draw: the class split is whatever fell
        positions = np.sort(np.concatenate(picked))  # time order; oversampled duplicates sit together
        indices = positions.astype(np.int64) if rows is None else rows[positions]
        report = build_sample_report(
            is_pos,
            bounds,
            available=(available_pos, available_neg),
            quota=(quota_pos, quota_neg),
            drawn=(drawn_pos, drawn_neg),
            shortfall=(short_pos, short_neg),
            replaced=replaced,
            unique_rows=int(np.count_nonzero(np.diff(positions))) + 1 if len(positions) else 0,  # sorted
            notes=notes,
            target_rows=_round_half_up(config.ratio * len(is_pos)),
            temporal=config.temporal,
            balanced=config.balanced,
            empty_block_policy=config.empty_block_policy,
        )
        return SampleResult(indices=indices, report=report)

    def augment_unclicked(self, clicked_sample: SampleResult, label_click: np.ndarray) -> np.ndarray:
        """Unclicked rows for Eq. 9 at `config.unclicked_ratio`, on a seed stream separate from the sample's."""
        rng = np.random.default_rng([self.config.seed, 9])
        return augment_unclicked(clicked_sample.indices, label_click, self.config.unclicked_ratio, rng)

    def _balanced_quotas(
        self, rows: int, available_pos: np.ndarray, available_neg: np.ndarray, notes: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-block positive/negative quotas after the empty-block policy -> (q+, q-, short+, short-)."""
        config = self.config
        blocks = len(available_pos)
        total_pos = _round_half_up(config.ratio * config.positive_ratio * rows)
        total_neg = _round_half_up(config.ratio * rows) - total_pos
        quota_pos = _split_evenly(total_pos, blocks)
        quota_neg = _split_evenly(total_neg, blocks)
        # Positives: only blocks WITHOUT positives are a problem (blocks with a few oversample them).
        empty = (available_pos == 0) & (quota_pos > 0)
        # Negatives: any block with fewer negatives than its quota gives all it has.
        lacking = np.maximum(quota_neg - available_neg, 0)
        for k in np.flatnonzero(empty):
            notes.append(f"block {k} has no positives: its quota of {quota_pos[k]} positives is unmet there")
        for k in np.flatnonzero(lacking):
            notes.append(
                f"block {k} has {available_neg[k]} negatives < quota {quota_neg[k]}: took all of them"
            )
        unmet_pos = np.where(empty, quota_pos, 0)
        quota_pos = quota_pos - unmet_pos
        quota_neg = quota_neg - lacking
        if config.empty_block_policy == "shortfall":
            if unmet_pos.any() or lacking.any():
                notes.append(
                    f"policy 'shortfall': {int(unmet_pos.sum())} positives and {int(lacking.sum())} negatives short"
                )
            return quota_pos, quota_neg, unmet_pos, lacking
        # Redistribute: spare rows first (no duplicates), spread evenly so every block keeps contributing.
        spare_pos = np.where(available_pos > 0, available_pos - quota_pos, 0).clip(min=0)
        added, leftover = _spread(int(unmet_pos.sum()), spare_pos)
        # Spare positives exhausted: oversample evenly in the blocks that have positives.
        added_over, leftover = _spread(leftover, np.where(available_pos > 0, np.iinfo(np.int32).max, 0))
        quota_pos = quota_pos + added + added_over
        added, leftover_neg = _spread(int(lacking.sum()), available_neg - quota_neg)
        quota_neg = quota_neg + added
        # What found no place stays a shortfall of the blocks it came from (so per-block sums match).
        short_pos, _ = _spread(leftover, unmet_pos)
        short_neg, _ = _spread(leftover_neg, lacking)
        if unmet_pos.any():
            notes.append(
                f"moved {int(unmet_pos.sum()) - leftover} of {int(unmet_pos.sum())} positives' quota from blocks "
                f"without positives to other blocks ({int(added_over.sum())} of them oversampled)"
            )
        if lacking.any():
            notes.append(
                f"moved {int(lacking.sum()) - leftover_neg} of {int(lacking.sum())} missing negatives to blocks "
                "with spare ones"
            )
        if leftover:
            notes.append(f"no positives in any block: {leftover} positives short")
        if leftover_neg:
            notes.append(f"not enough negatives in the whole data: {leftover_neg} negatives short")
        return quota_pos, quota_neg, short_pos, short_neg


def _draw(rng: np.random.Generator, at: np.ndarray, quota: int, *, oversample: bool) -> tuple[np.ndarray, bool]:
    """`quota` positions from `at`: without replacement if enough; else all of `at` once, plus (only if
    `oversample`) the rest drawn with replacement -> (positions, with_replacement)."""
    if quota <= len(at):
        return rng.choice(at, quota, replace=False, shuffle=False), False
    if not oversample or len(at) == 0:
        return at, False
    extra = at[rng.integers(0, len(at), quota - len(at))]
    return np.concatenate([at, extra]), True
