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

Unclicked-sample augmentation for pCVR (Eq. 9) is at the end: `augment_unclicked` picks unclicked rows,
`assemble_pcvr_sample` attaches the teacher's pCVR as soft labels.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


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


class BlockReport(BaseModel):
    """What one temporal block offered and gave. Quotas are after redistribution."""

    model_config = ConfigDict(extra="forbid")

    block: int
    rows: int
    first_row: int = Field(description="Position of the block's first row in time order.")
    available_pos: int
    available_neg: int
    quota_pos: int
    quota_neg: int
    drawn_pos: int
    drawn_neg: int
    pos_with_replacement: bool = Field(description="True where positives were oversampled (duplicates).")
    shortfall_pos: int
    shortfall_neg: int
    positive_rate: float = Field(description="drawn_pos / (drawn_pos + drawn_neg); 0 when nothing drawn.")


class SampleReport(BaseModel):
    """Everything drawn, per block and in total; `notes` explain shortfalls and moved quotas."""

    model_config = ConfigDict(extra="forbid")

    source_rows: int
    source_positive_rate: float
    target_rows: int = Field(description="round(r * |D|), what Eq. 7-8 ask for.")
    total_rows: int
    unique_rows: int
    positives: int
    negatives: int
    positive_rate: float
    effective_ratio: float = Field(description="total_rows / source_rows.")
    shortfall_pos: int
    shortfall_neg: int
    temporal: bool
    balanced: bool
    empty_block_policy: str
    blocks: list[BlockReport]
    notes: list[str]

    def format_table(self) -> str:
        """A plain-text table, one line per block, then the totals and the notes."""
        header = "block   rows  avail+  avail-  quota+  quota-  drawn+  drawn-  repl  short+  short-  pos%"
        lines = [header]
        for b in self.blocks:
            lines.append(
                f"{b.block:5d} {b.rows:6d} {b.available_pos:7d} {b.available_neg:7d} {b.quota_pos:7d}"
                f" {b.quota_neg:7d} {b.drawn_pos:7d} {b.drawn_neg:7d} {'yes' if b.pos_with_replacement else 'no':>5}"
                f" {b.shortfall_pos:7d} {b.shortfall_neg:7d} {100 * b.positive_rate:5.1f}"
            )
        lines.append(
            f"total {self.total_rows} rows of {self.source_rows} (target {self.target_rows}, effective ratio "
            f"{self.effective_ratio:.4f}), {self.positives} pos / {self.negatives} neg, positive rate "
            f"{100 * self.positive_rate:.1f}% (source {100 * self.source_positive_rate:.2f}%)"
        )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


class SampleResult(BaseModel):
    """`indices` [n'] int64 row ids into the input, sorted by time (oversampled rows repeat)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    indices: np.ndarray
    report: SampleReport


# --------------------------------------------------------------------------- helpers


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


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


def _binary_labels(label: np.ndarray, name: str = "label", rows: np.ndarray | None = None) -> np.ndarray:
    """label [n] -> bool [n] (True = positive); anything but 0/1 is an error naming the first bad row
    (`rows` [n]: the original row id of each entry, when `label` is a gathered subset)."""
    label = np.asarray(label)
    if label.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {label.shape}")
    positive = label == 1
    bad = ~(positive | (label == 0))
    if bad.any():
        at = int(np.argmax(bad))
        row = at if rows is None else int(rows[at])
        raise ValueError(
            f"{name}[{row}] = {label[at].item()!r}: labels must be 0 or 1 "
            f"({int(bad.sum())} bad values in {len(label)} rows)"
        )
    return positive


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
        report = _build_report(
            config,
            is_pos,
            bounds,
            available=(available_pos, available_neg),
            quota=(quota_pos, quota_neg),
            drawn=(drawn_pos, drawn_neg),
            shortfall=(short_pos, short_neg),
            replaced=replaced,
            unique_rows=int(np.count_nonzero(np.diff(positions))) + 1 if len(positions) else 0,  # sorted
            notes=notes,
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


def _build_report(
    config: SamplingConfig,
    is_pos: np.ndarray,
    bounds: np.ndarray,
    *,
    available: tuple[np.ndarray, np.ndarray],
    quota: tuple[np.ndarray, np.ndarray],
    drawn: tuple[np.ndarray, np.ndarray],
    shortfall: tuple[np.ndarray, np.ndarray],
    replaced: np.ndarray,
    unique_rows: int,
    notes: list[str],
) -> SampleReport:
    rows = len(is_pos)
    available_pos, available_neg = available
    blocks = [
        BlockReport(
            block=k,
            rows=int(bounds[k + 1] - bounds[k]),
            first_row=int(bounds[k]),
            available_pos=int(available_pos[k]),
            available_neg=int(available_neg[k]),
            quota_pos=int(quota[0][k]),
            quota_neg=int(quota[1][k]),
            drawn_pos=int(drawn[0][k]),
            drawn_neg=int(drawn[1][k]),
            pos_with_replacement=bool(replaced[k]),
            shortfall_pos=int(shortfall[0][k]),
            shortfall_neg=int(shortfall[1][k]),
            positive_rate=float(drawn[0][k] / max(drawn[0][k] + drawn[1][k], 1)),
        )
        for k in range(len(bounds) - 1)
    ]
    positives, negatives = int(drawn[0].sum()), int(drawn[1].sum())
    total = positives + negatives
    if replaced.any():
        notes.append(f"positives oversampled with replacement in blocks {np.flatnonzero(replaced).tolist()}")
    return SampleReport(
        source_rows=rows,
        source_positive_rate=float(available_pos.sum() / rows),
        target_rows=_round_half_up(config.ratio * rows),
        total_rows=total,
        unique_rows=unique_rows,
        positives=positives,
        negatives=negatives,
        positive_rate=positives / max(total, 1),
        effective_ratio=total / rows,
        shortfall_pos=int(shortfall[0].sum()),
        shortfall_neg=int(shortfall[1].sum()),
        temporal=config.temporal,
        balanced=config.balanced,
        empty_block_policy=config.empty_block_policy,
        blocks=blocks,
        notes=notes,
    )


# --------------------------------------------------------------------------- unclicked augmentation (Eq. 9)


class PcvrSample(BaseModel):
    """D''_train for pCVR: indices [m] int64 row ids, labels [m] float32 (hard 0/1 conversions for the
    clicked sample, the teacher's pCVR in [0, 1] for unclicked rows), pseudo [m] bool (True = soft label).
    Clicked rows come first, then unclicked rows; the trainer shuffles."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    indices: np.ndarray
    labels: np.ndarray
    pseudo: np.ndarray


def augment_unclicked(
    clicked_indices: np.ndarray,
    label_click: np.ndarray,
    r_unclick: float,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Eq. 9's row choice: round(r_unclick * |D'_train|) unclicked rows, uniform without replacement.

    clicked_indices [m] row ids of the clicked sample D'_train (duplicates count: they are sample rows);
    label_click [n] 0/1 click labels of all rows. Returns sorted int64 row ids with label_click == 0.
    If fewer unclicked rows exist than asked for, all are taken and a warning is logged.
    """
    if not (r_unclick >= 0.0 and math.isfinite(r_unclick)):
        raise ValueError(f"r_unclick must be a finite number >= 0, got {r_unclick}")
    clicked = _binary_labels(label_click, "label_click")
    clicked_indices = np.asarray(clicked_indices, dtype=np.int64)
    if clicked_indices.size:
        if clicked_indices.min() < 0 or clicked_indices.max() >= len(clicked):
            raise ValueError(f"clicked_indices must be row ids in [0, {len(clicked)})")
        not_clicked = ~clicked[clicked_indices]
        if not_clicked.any():
            at = int(np.argmax(not_clicked))
            raise ValueError(
                f"clicked_indices[{at}] = row {clicked_indices[at]} has label_click 0: the sample to augment "
                "must contain clicked rows only"
            )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pool = np.flatnonzero(~clicked)
    wanted = _round_half_up(r_unclick * len(clicked_indices))
    if wanted > len(pool):
        log.warning("asked for %d unclicked rows but only %d exist: taking all of them", wanted, len(pool))
        return pool.astype(np.int64)
    return np.sort(rng.choice(pool, wanted, replace=False, shuffle=False)).astype(np.int64)


def assemble_pcvr_sample(
    clicked_indices: np.ndarray,
    conversion: np.ndarray,
    unclicked_indices: np.ndarray,
    teacher_pcvr: np.ndarray,
) -> PcvrSample:
    """D''_train = D'_train ∪ {(x_i, f_T^CVR(x_i))} (Eq. 9).

    conversion [n] 0/1 labels of all rows (read only at `clicked_indices`); teacher_pcvr
    [len(unclicked_indices)] the teacher's pCVR for the unclicked rows, in the same order.
    """
    clicked_indices = np.asarray(clicked_indices, dtype=np.int64)
    unclicked_indices = np.asarray(unclicked_indices, dtype=np.int64)
    conversion = np.asarray(conversion)
    for name, ids in (("clicked_indices", clicked_indices), ("unclicked_indices", unclicked_indices)):
        if ids.size and (ids.min() < 0 or ids.max() >= len(conversion)):
            raise ValueError(f"{name} must be row ids in [0, {len(conversion)})")
    hard = _binary_labels(conversion[clicked_indices], "conversion[clicked_indices]")
    pcvr = np.asarray(teacher_pcvr)
    if pcvr.ndim != 1 or len(pcvr) != len(unclicked_indices):
        raise ValueError(
            f"teacher_pcvr has shape {pcvr.shape}; expected ({len(unclicked_indices)},), one per unclicked row"
        )
    bad = ~(np.isfinite(pcvr) & (pcvr >= 0.0) & (pcvr <= 1.0))
    if bad.any():
        at = int(np.argmax(bad))
        raise ValueError(
            f"teacher_pcvr[{at}] = {pcvr[at].item()!r} (row {unclicked_indices[at]}): predictions must be finite "
            f"probabilities in [0, 1] ({int(bad.sum())} bad values)"
        )
    return PcvrSample(
        indices=np.concatenate([clicked_indices, unclicked_indices]),
        labels=np.concatenate([hard.astype(np.float32), pcvr.astype(np.float32)]),
        pseudo=np.concatenate([np.zeros(len(clicked_indices), bool), np.ones(len(unclicked_indices), bool)]),
    )
