"""The student's KD settings and progressive distillation's, apart from the trainer: pydantic only, so a process
that validates a distillation's settings (a gRPC server at Start) does not load torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossadapt.training.config import TrainConfig
from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig


class StudentKDConfig(BaseModel):
    """The student's optimiser and KD-loss settings that the offline, online and baseline configs share
    (paper defaults: λ = 0.7, T = 4, Adam 0.1 / 1e-3, batch 4096). ``lambda`` is accepted for ``kd_weight``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    batch_size: int = Field(4096, ge=1, description="Rows per student step.")
    kd_weight: float = Field(0.7, alias="lambda", ge=0.0, description="λ: weight of the KD term.")
    temperature: float = Field(4.0, gt=0.0, description="T: both models' logits are divided by T.")
    scale_kd_by_t2: bool = Field(True, description="Multiply the KD term by T² (Hinton).")
    kd_gate: Literal["all", "teacher_better"] = Field(
        "all",
        description="Which rows are distilled: 'all' (the paper), or 'teacher_better': only rows where the "
        "teacher's loss on the true label is below the student's at that step (the KD term is still divided "
        "by the batch size, so it shrinks as the student overtakes the teacher).",
    )
    embedding_lr: float = Field(0.1, gt=0.0, description="Student embedding lr.")
    dense_lr: float = Field(1e-3, gt=0.0, description="Student interaction-network lr.")
    seed: int = Field(0, description="Seeds shuffling and dropout.")
    device: str = "cpu"
    num_threads: int | None = Field(None, ge=1)

    def student_train_config(self, **overrides: Any) -> TrainConfig:
        """The student's :class:`TrainConfig`: these settings, no early stopping, no progress bar."""
        return TrainConfig(**{
            "batch_size": self.batch_size, "embedding_lr": self.embedding_lr, "dense_lr": self.dense_lr,
            "seed": self.seed, "progress": False, "num_threads": self.num_threads, "device": self.device,
            "patience": None, "restore_best": False, **overrides,
        })


class OfflineDistillConfig(StudentKDConfig):
    """Progressive distillation settings (λ of Eq. 5-6; the shared fields are :class:`StudentKDConfig`'s)."""

    frozen_epochs: int = Field(1, ge=0, description="Phase 1 epochs (embeddings frozen).")
    joint_epochs: int = Field(1, ge=0, description="Phase 2 epochs (everything trains).")
    progressive: bool = Field(True, description="False: no frozen phase (ablation), same total epochs.")
    shuffle: bool = Field(True, description="Reshuffle D'_train every epoch (offline data has no order to keep).")
    teacher_batch_size: int = Field(65536, ge=1, description="Rows per teacher forward when caching logits.")
    eval_batch_size: int = Field(65536, ge=1)
    target: Literal["click", "conversion"] = "click"
    adaptive: AdaptiveKDConfig | None = Field(None, description="Gap-driven λ (CrossAdapt-Adaptive); None = fixed λ.")
    task_logit_shift: float = Field(
        0.0,
        description="Added to the student's logits inside the BCE term only. For a class-balanced sample use "
        "logit(sample rate) - logit(data rate) (prior correction for resampling, He et al. 2014): the BCE "
        "then fits the sample's labels while the model's own logits, which the KD term compares with the "
        "teacher's and which serve later, stay at the data's base rate. 0 = the paper's plain BCE.",
    )

    @model_validator(mode="after")
    def _some_epochs(self) -> "OfflineDistillConfig":
        if self.frozen_epochs + self.joint_epochs == 0:
            raise ValueError("frozen_epochs + joint_epochs must be >= 1")
        return self

    def train_config(self, epochs: int, seed_offset: int = 0) -> TrainConfig:
        """The :class:`TrainConfig` of one phase: fixed epochs, no early stopping."""
        return self.student_train_config(eval_batch_size=self.eval_batch_size, epochs=max(epochs, 1),
                                         target=self.target, seed=self.seed + seed_offset, shuffle=self.shuffle)
