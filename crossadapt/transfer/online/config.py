"""Online co-distillation's settings, apart from the loop: pydantic only, so a process that validates them (a
gRPC server at Start) does not load torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
from crossadapt.transfer.offline.config import StudentKDConfig

CollaborationGate = Literal["student_better", "gap", "all"]


class CollaborativeConfig(BaseModel):
    """The teacher's KD term toward the student (``μ``, ``T``, which rows); see crossadapt.transfer.online.collaborative."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, gt=0.0, description="μ: weight of the teacher's KD term toward the student.")
    temperature: float = Field(1.0, gt=0.0, description="T of the teacher's KD term (both logits / T).")
    gate: CollaborationGate = Field(
        "student_better", description="Which rows teach the teacher: 'student_better' (the student's BCE on the "
        "true label is lower), 'gap' (weighted by the relative loss gap, clipped to [0, 1]) or 'all'.")
    scale_by_t2: bool = Field(True, description="Multiply the KD term by T² (Hinton).")


class OnlineCoDistillConfig(StudentKDConfig):
    """Co-distillation settings (paper defaults: τ = 10, λ = 0.7, T = 4, Adam 0.1 / 1e-3, batch 4096).

    The student's fields are :class:`~crossadapt.transfer.offline.config.StudentKDConfig`'s: ``batch_size`` is
    ``|B_t|``, the stream rows per step (replay rows come on top); ``seed`` seeds dropout (the replay draws
    are seeded by the ReplayController).
    """

    teacher_update_interval: int = Field(10, ge=1, description="τ: teacher steps at t = τ, 2τ, ...")
    co_evolution: bool = Field(True, description="False: the teacher is frozen (ablation).")
    asymmetric: bool = Field(True, description="False: the teacher steps every batch, τ = 1 (ablation).")
    distillation: bool = Field(True, description="False: λ = 0 (ablation).")
    teacher_optimizer: Literal["adam", "sgd"] = "adam"
    teacher_embedding_lr: float = Field(0.1, gt=0.0, description="η_T for the teacher's embedding tables.")
    teacher_dense_lr: float = Field(1e-3, gt=0.0, description="η_T for the rest of the teacher.")
    partial_window: Literal["drop", "flush"] = Field("drop", description="What to do with < τ pending batches.")
    window_batches: int = Field(10, ge=1, description="Batches per prequential window record.")
    adaptive: AdaptiveKDConfig | None = Field(None, description="Gap-driven λ and replay share; None = fixed.")
    grow_vocabulary: bool = Field(
        False,
        description="Stream ids beyond the tables (a newer vocabulary version) grow both models' tables (new "
        "student rows from the teacher's projected rows where the teacher has the value; optimiser state "
        "follows); False: such ids read as <UNK> (id 0), as a model of the older version sees them.",
    )
    projection_seed: int = Field(0, description="Seed of the teacher -> student projection for grown rows.")
    target: Literal["click", "conversion"] = Field(
        "click", description="The label both models fit: 'conversion' (pCVR) streams the clicked rows only, "
        "where a conversion label is defined.")
    collaborative: CollaborativeConfig | None = Field(
        None, description="Beyond the paper: the teacher also distills from the student where the student knows "
        "more (CrossAdapt-Collaborative; crossadapt.transfer.online.collaborative). None: the teacher learns "
        "from the labels only, as in the paper.")

    @model_validator(mode="after")
    def _collaboration_needs_a_learning_teacher(self) -> "OnlineCoDistillConfig":
        if self.collaborative is not None and not self.co_evolution:
            raise ValueError("collaborative co-distillation trains the teacher: it needs co_evolution")
        return self

    @property
    def effective_interval(self) -> int:
        return self.teacher_update_interval if self.asymmetric else 1

    @property
    def effective_kd_weight(self) -> float:
        return self.kd_weight if self.distillation else 0.0
