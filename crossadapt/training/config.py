"""Typed training configuration (unknown keys are rejected, so a misspelt option fails loudly)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Target = Literal["click", "conversion"]


class TrainConfig(BaseModel):
    """How a :class:`~crossadapt.training.Trainer` trains (defaults follow the paper: Adam, lr 0.1 for
    embeddings and 1e-3 for the interaction network, batch 4096)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(4096, ge=1, description="Rows per optimiser step.")
    eval_batch_size: int = Field(65536, ge=1, description="Rows per forward pass when predicting.")
    embedding_lr: float = Field(0.1, gt=0, description="Adam (or SparseAdam) learning rate of embedding tables.")
    dense_lr: float = Field(1e-3, gt=0, description="Adam learning rate of everything else.")
    sparse_embedding: bool | None = Field(
        None,
        description="True: sparse embedding gradients + SparseAdam (updates only the rows a batch touched); "
        "False: dense Adam; None: keep the model's own setting.",
    )
    epochs: int = Field(1, ge=1, description="Passes over the training rows (early stopping may end sooner).")
    target: Target = Field(
        "click",
        description="'click' trains on the click label; 'conversion' on the conversion label "
        "(callers such as train_teacher keep only clicked rows, the usual pCVR setting).",
    )
    monitor: Literal["auc", "logloss"] = Field("auc", description="Validation metric for early stopping.")
    patience: int | None = Field(
        2, ge=1, description="Stop after this many validations in a row without improvement (None: never stop early)."
    )
    min_delta: float = Field(0.0, ge=0, description="Smallest change of the monitored metric that counts.")
    restore_best: bool = Field(True, description="Reload the weights of the best validation at the end of fit.")
    eval_every_steps: int | None = Field(
        None, ge=1, description="Validate every this many steps as well as at each epoch end (None: epoch ends only)."
    )
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="train_teacher: the latest fraction of the train split held out for validation."
    )
    seed: int = Field(0, description="Seeds model init (train_teacher), shuffling and dropout.")
    shuffle: bool = Field(True, description="Reshuffle the training rows every epoch (one permutation gather).")
    progress: bool | None = Field(None, description="Progress bar; None shows it only when stderr is a terminal.")
    log_every_steps: int = Field(
        50, ge=1, description="Refresh the bar's loss (a device sync) and check it is finite every this many steps."
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None uses every core available.")
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda'.")
