"""What a strategic sample drew (paper Eq. 7-8): per temporal block and in total, with notes on
shortfalls and moved quotas. Built by `StrategicSampler.sample` (`crossadapt.transfer.offline.sampling`)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


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


def build_sample_report(
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
    target_rows: int,
    temporal: bool,
    balanced: bool,
    empty_block_policy: str,
) -> SampleReport:
    """The report of one draw; the sampler passes its counts per block and the settings it drew with."""
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
        target_rows=target_rows,
        total_rows=total,
        unique_rows=unique_rows,
        positives=positives,
        negatives=negatives,
        positive_rate=positives / max(total, 1),
        effective_ratio=total / rows,
        shortfall_pos=int(shortfall[0].sum()),
        shortfall_neg=int(shortfall[1].sum()),
        temporal=temporal,
        balanced=balanced,
        empty_block_policy=empty_block_policy,
        blocks=blocks,
        notes=notes,
    )
