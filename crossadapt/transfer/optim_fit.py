"""Batch size and learning rates fitted to the data a switch trains on (``optim`` of the switch config).

The paper trains with batch 4096, Adam lr 0.1 on the embeddings and 1e-3 on the network, on ~10^7 rows.
On 10^5-10^6 rows that batch leaves too few steps: on a held-out Criteo-shaped 1M-row file, batch 4096
(~100 steps per epoch of D_train) cost every model 3-6 AUC points against batch 512 with the embedding lr
scaled. The student's offline stage sees only the sample (r = 10% of D_train), so it gets even fewer.

The data-fitted choice (``optim: data``, the default): the largest power-of-two batch that still gives
the student's offline training rows (the sample, or D_train without sampling) ``steps_per_epoch`` steps
per epoch, within [MIN_BATCH, PAPER_BATCH]; the embedding lr follows the batch (`scaled_embedding_lr`);
the dense lr stays the paper's. ``optim: paper`` keeps the paper's values. Values the config sets win.

No torch here: reading a switch config must stay cheap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

PAPER_BATCH = 4096
PAPER_EMBEDDING_LR = 0.1
PAPER_DENSE_LR = 1e-3
#: Below this the per-step overhead dominates a CPU step and the gradient noise of a CTR batch grows large.
MIN_BATCH = 64
DEFAULT_STEPS_PER_EPOCH = 100

OptimPreset = Literal["data", "paper"]


def scaled_embedding_lr(batch_size: int) -> float:
    """The paper's embedding lr (0.1 at batch 4096) scaled linearly with the batch (Goyal et al., 2017).

    Adam moves every touched embedding row by about ``lr`` per step whatever the gradient's size, so at
    an 8x smaller batch (8x the steps per epoch) an unscaled 0.1 moves the tables 8x further per epoch
    than the paper's. Measured on the `small` preset (300k rows, batch 512, validation AUC of one
    epoch on hist ∪ train): FiBiNET-16 reached 69.9% at 0.1 against 74.7% at 0.0125, while the
    MLP-8 teacher was unaffected (74.1% against 73.9–74.2%). Unscaled, the "architecture-mismatched"
    student would be a crippled FiBiNET, five points below the MLP it replaces.
    """
    return PAPER_EMBEDDING_LR * batch_size / PAPER_BATCH


def fitted_batch_size(rows: int, steps_per_epoch: int = DEFAULT_STEPS_PER_EPOCH, *, min_batch: int = MIN_BATCH,
                      max_batch: int = PAPER_BATCH) -> int:
    """The largest power of two ``b`` with ``rows / b >= steps_per_epoch``, clamped to [min_batch, max_batch]."""
    if rows < 1 or steps_per_epoch < 1:
        raise ValueError(f"fitted_batch_size needs rows >= 1 and steps_per_epoch >= 1, got {rows}, {steps_per_epoch}")
    if min_batch > max_batch:
        raise ValueError(f"fitted_batch_size: min_batch {min_batch} > max_batch {max_batch}")
    largest = rows // steps_per_epoch
    batch = 1 << (largest.bit_length() - 1) if largest >= 1 else 1
    return int(min(max(batch, min_batch), max_batch))


class OptimChoice(BaseModel):
    """The batch and learning rates a switch trains with, and why (shown in its report)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int
    embedding_lr: float
    dense_lr: float
    preset: OptimPreset
    explicit: list[str] = []  # the values the config set (they win over the preset)
    basis: str = ""  # the rows the batch was fitted to, in words
    basis_rows: int | None = None
    steps_per_epoch: int | None = None  # of the basis rows at the chosen batch

    def reason(self) -> str:
        """One sentence: what was chosen and why."""
        values = f"batch {self.batch_size}, embedding lr {self.embedding_lr:g}, dense lr {self.dense_lr:g}"
        given = f"; set by the config: {', '.join(self.explicit)}" if self.explicit else ""
        if self.preset == "paper":
            why = "the paper's values (optim: paper)"
        else:
            why = ("fitted to the data (optim: data): the largest power-of-two batch in "
                   f"[{MIN_BATCH}, {PAPER_BATCH}] giving the {self.basis} enough steps per epoch; "
                   "embedding lr scaled with the batch (0.1 at 4096), dense lr the paper's")
        steps = (f" — {self.basis_rows} rows of the {self.basis} → {self.steps_per_epoch} steps per epoch"
                 if self.basis_rows is not None else "")
        return f"{values}: {why}{given}{steps}."


def choose_optim(
    preset: OptimPreset,
    *,
    basis_rows: int,
    basis: str,
    batch_size: int | None = None,
    embedding_lr: float | None = None,
    dense_lr: float | None = None,
    steps_per_epoch: int = DEFAULT_STEPS_PER_EPOCH,
) -> OptimChoice:
    """Fill the values the config left out from ``preset`` ('data': fitted to ``basis_rows``; 'paper')."""
    explicit = [name for name, value in (("batch_size", batch_size), ("embedding_lr", embedding_lr),
                                         ("dense_lr", dense_lr)) if value is not None]
    if preset == "paper":
        batch = batch_size or PAPER_BATCH
        emb = PAPER_EMBEDDING_LR if embedding_lr is None else embedding_lr
    elif preset == "data":
        batch = batch_size or fitted_batch_size(basis_rows, steps_per_epoch)
        emb = scaled_embedding_lr(batch) if embedding_lr is None else embedding_lr
    else:
        raise ValueError(f"unknown optim preset {preset!r}; choose 'data' or 'paper'")
    return OptimChoice(
        batch_size=batch, embedding_lr=emb, dense_lr=PAPER_DENSE_LR if dense_lr is None else dense_lr,
        preset=preset, explicit=explicit, basis=basis, basis_rows=basis_rows,
        steps_per_epoch=max(1, -(-basis_rows // batch)),
    )
