"""The training run both the task and the DDP ranks build: its inputs and the core distillation it runs.

Kept apart from `pipeline` (stores, checkpoints, publishing) so that `ddp` (the data-parallel
launcher, which `pipeline` calls) needs nothing of `pipeline`: no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from crossadapt.data.arrays import SplitArrays
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.transfer.offline.distillation import OfflineDistillConfig, ProgressiveDistillation
from services.offline_distiller.plan import DistillationPlan

EVAL_BATCH_ROWS = 8192


@dataclass
class DistillationInputs:
    """What the training run starts from."""

    train: SplitArrays
    valid: SplitArrays | None
    student: nn.Module
    state: dict[str, Any] | None = None  # a resumed run's state (ProgressiveDistillation.state_dict)
    resumed_from: str | None = None  # the work-in-progress checkpoint it came from
    vocabulary: Vocabulary | None = None
    tables: dict[str, list[str]] = field(default_factory=dict)  # {"projected": [...], "random": [...], ...}
    teacher_logit_seconds: float = 0.0
    train_cpu_seconds: float = 0.0  # this process's CPU time during training (run_distillation sets it)


def core_config(plan: DistillationPlan, device: str, num_threads: int | None = None) -> OfflineDistillConfig:
    d, o = plan.settings.distillation, plan.settings.optim
    return OfflineDistillConfig(
        frozen_epochs=d.frozen_epochs, joint_epochs=d.joint_epochs, kd_weight=d.kd_weight, temperature=d.temperature,
        batch_size=o.batch_size, embedding_lr=o.embedding_lr, dense_lr=o.dense_lr, seed=plan.settings.seed,
        device=device, num_threads=num_threads, teacher_batch_size=EVAL_BATCH_ROWS, eval_batch_size=EVAL_BATCH_ROWS,
        task_logit_shift=plan.settings.task_logit_shift, kd_gate=d.kd_gate, target=plan.settings.target,
        adaptive=plan.settings.adaptive,
    )


def build_run(plan: DistillationPlan, inputs: DistillationInputs, *, device: str, num_threads: int | None = None,
              distributed: bool = False) -> ProgressiveDistillation:
    run = ProgressiveDistillation(inputs.student, inputs.train, core_config(plan, device, num_threads),
                                  valid=inputs.valid, distributed=distributed)
    if inputs.state is not None:
        run.load_state_dict(inputs.state)
    return run

