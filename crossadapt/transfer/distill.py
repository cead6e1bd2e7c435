"""Progressive interaction-network distillation (paper Sec. 3.1.2, Eq. 5-6, Algorithm 1 lines 16-26).

Phase 1 ("frozen"): the student's embedding tables (already projected from the teacher) are frozen and only
the interaction network learns, on ``BCE(p_S, y) + λ · KD(p_S, p_T)``. Phase 2 ("joint"): everything learns
on the same loss. ``KD`` is :func:`~crossadapt.transfer.losses.kd_cross_entropy` at temperature ``T``
(scaled by ``T²``, see that module).

The teacher is frozen offline, so its logits over ``D'_train`` are computed ONCE (batched, eval mode,
no autograd) and carried in the ``teacher_logit`` column; the training loop never calls the teacher. A
split that already carries ``teacher_logit`` (e.g. cached by the sampler) is used as is.

Choices:
- ``progressive=False`` (ablation "w/o progressive") trains jointly for ``frozen_epochs + joint_epochs``
  epochs, so both variants see the same number of rows.
- One :class:`DistillationTrainer` (hence one optimiser) serves both phases: Adam state of the interaction
  network carries over into phase 2; embedding rows start their Adam state when they unfreeze.
- No early stopping: the paper trains a fixed number of epochs; a ``valid`` split is only measured.
- ``adaptive`` (beyond the paper): every ``offline_eval_every_steps`` steps the student's LogLoss on a
  validation slice is compared with the teacher's and ``λ`` follows
  :class:`~crossadapt.transfer.adaptive.AdaptiveKDController`.

Shared with the online stage and the baselines: :class:`StudentKDConfig` (the student's optimiser and KD
settings every KD config repeats) and :func:`forward_with_features` (logits plus the features a KD term
compares, from one forward: the teacher's in co-distillation, the student's in Hint-KD / RKD).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from crossadapt.data.batch import Batch
from crossadapt.training import TrainConfig, Trainer
from crossadapt.training.evaluate import MetricDict, predict_logits
from crossadapt.transfer.adaptive import AdaptiveKDConfig, AdaptiveKDController
from crossadapt.transfer.losses import kd_cross_entropy, kd_kl

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays

__all__ = [
    "StudentKDConfig",
    "OfflineDistillConfig",
    "DistillationTrainer",
    "forward_with_features",
    "PhaseRecord",
    "OfflineDistillResult",
    "cache_teacher_logits",
    "distill_offline",
    "logloss_from_logits",
]


class StudentKDConfig(BaseModel):
    """The student's optimiser and KD-loss settings that the offline, online and baseline configs share
    (paper defaults: λ = 0.7, T = 4, Adam 0.1 / 1e-3, batch 4096). ``lambda`` is accepted for ``kd_weight``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    batch_size: int = Field(4096, ge=1, description="Rows per student step.")
    kd_weight: float = Field(0.7, alias="lambda", ge=0.0, description="λ: weight of the KD term.")
    temperature: float = Field(4.0, gt=0.0, description="T: both models' logits are divided by T.")
    scale_kd_by_t2: bool = Field(True, description="Multiply the KD term by T² (Hinton).")
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


def logloss_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean BCE of ``σ(logits [n])`` against ``labels [n]``, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    # -[y log σ(z) + (1-y) log σ(-z)] = softplus(z) - y z
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


KDFeatures = Literal["embedding", "hidden"]


def forward_with_features(
    model: nn.Module, batch: Batch, features: KDFeatures | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward of ``model`` on ``batch``: ``[B]`` logits and, from the same pass, the features a KD term
    compares: the field embeddings ``[B, F, D]`` (``"embedding"``, captured from ``model.embedding``), the
    representation the scoring layer reads ``[B, H]`` (``"hidden"``) or None. Nothing is detached."""
    if features == "hidden":
        return model.forward_with_representation(batch.categorical, batch.numerical)
    if features is None:
        return model(batch.categorical, batch.numerical), None
    captured: list[torch.Tensor] = []
    handle = model.embedding.register_forward_hook(lambda module, inputs, out: captured.append(out))
    try:
        logits = model(batch.categorical, batch.numerical)
    finally:
        handle.remove()
    return logits, captured[0]


class DistillationTrainer(Trainer):
    """A :class:`Trainer` whose loss is ``BCE + λ · KD(student, batch.teacher_logit)`` (Eq. 5-6, Eq. 10).

    ``kd_weight`` may be changed between steps (adaptive λ). ``λ = 0`` skips the KD term (and does not need
    ``teacher_logit``). ``kd_loss="kl"`` uses the Bernoulli KL (Vanilla-KD) instead of the cross-entropy:
    same student gradient, but 0 at agreement. The mean task and KD terms since the last
    :meth:`pop_loss_parts` are kept on the device (no sync per step).

    Subclasses that need more of the teacher than its logits (Hint-KD, RKD) set :attr:`teacher_features`;
    the co-distillation loop then puts that teacher tensor in :attr:`teacher_context` before each step.
    """

    teacher_features: KDFeatures | None = None

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        kd_weight: float,
        temperature: float,
        scale_kd_by_t2: bool = True,
        kd_loss: Literal["cross_entropy", "kl"] = "cross_entropy",
        task_logit_shift: float = 0.0,
    ):
        super().__init__(model, config)
        self.kd_weight = float(kd_weight)
        self.task_logit_shift = float(task_logit_shift)
        self.kd_loss = kd_cross_entropy if kd_loss == "cross_entropy" else kd_kl
        self.teacher_context: torch.Tensor | None = None
        self.temperature = float(temperature)
        self.scale_kd_by_t2 = scale_kd_by_t2
        self.last_logits: torch.Tensor | None = None  # [B] detached logits of the latest training forward
        self._parts = torch.zeros(3, device=self.device)  # task sum, kd sum, steps
        self.epoch_losses: list[float] = []  # mean training loss of each epoch of the latest fit

    def compute_loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        self.last_logits = logits.detach()
        task = super().compute_loss(batch, logits + self.task_logit_shift if self.task_logit_shift else logits)
        if self.kd_weight == 0.0:
            self._parts += torch.stack([task.detach(), torch.zeros_like(task), torch.ones_like(task)])
            return task
        if batch.teacher_logit is None:
            raise ValueError("distillation needs teacher logits: the batch has no teacher_logit column")
        kd = self.kd_loss(logits, batch.teacher_logit, self.temperature, scale_by_t2=self.scale_kd_by_t2)
        self._parts += torch.stack([task.detach(), kd.detach(), torch.ones_like(task)])
        return task + self.kd_weight * kd

    def on_epoch_end(self, epoch: int, train_loss: float, metrics: MetricDict | None) -> None:
        self.epoch_losses.append(float(train_loss))

    def pop_loss_parts(self) -> tuple[float, float]:
        """Mean (task, KD) loss over the steps since the last call (one device sync)."""
        task, kd, steps = self._parts.tolist()
        self._parts.zero_()
        return (task / steps, kd / steps) if steps else (float("nan"), float("nan"))


@dataclass
class PhaseRecord:
    """One phase of :func:`distill_offline`. Lists have one entry per epoch."""

    name: Literal["frozen", "joint"]
    epochs: int
    steps: int
    samples: int
    seconds: float
    train_loss: list[float] = field(default_factory=list)
    task_loss: float = float("nan")
    kd_loss: float = float("nan")
    valid: list[MetricDict] = field(default_factory=list)
    kd_weight_end: float = float("nan")


@dataclass
class OfflineDistillResult:
    """The trained student and what happened.

    ``teacher_logit_seconds`` is the one-off cost of caching the teacher's logits (0 if they came with the
    data); ``seconds`` is the whole call including it. ``kd_weight_trace`` holds ``(step, gap, λ)`` of the
    adaptive controller (empty for a fixed λ). ``optimizer_state`` lets the online stage continue the
    student's Adam state (:class:`~crossadapt.transfer.codistill.OnlineCoDistillConfig`).
    """

    student: nn.Module
    phases: list[PhaseRecord]
    seconds: float
    teacher_logit_seconds: float
    rows: int
    kd_weight_trace: list[tuple[int, float, float]] = field(default_factory=list)
    optimizer_state: list[dict] | None = None

    def history(self) -> list[dict]:
        """Flat per-epoch rows (phase, epoch, train_loss, valid AUC/LogLoss) for tables and plots."""
        rows = []
        for phase in self.phases:
            for epoch, loss in enumerate(phase.train_loss):
                metrics = phase.valid[epoch] if epoch < len(phase.valid) else {}
                rows.append({"phase": phase.name, "epoch": epoch, "train_loss": loss,
                             "valid_auc": metrics.get("auc"), "valid_logloss": metrics.get("logloss")})
        return rows


def cache_teacher_logits(teacher: nn.Module, arrays: "SplitArrays", batch_size: int = 65536) -> np.ndarray:
    """``[n]`` float32 teacher logits over ``arrays`` (one batched, eval-mode, no-grad pass)."""
    return predict_logits(teacher, arrays, batch_size)


class _AdaptiveOfflineTrainer(DistillationTrainer):
    """Adds the validation-driven λ of :mod:`crossadapt.transfer.adaptive` to the offline loop."""

    def __init__(self, *args, controller: AdaptiveKDController, valid: "SplitArrays",
                 teacher_valid_logloss: float, every: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.controller = controller
        self.valid = valid
        self.teacher_valid_logloss = teacher_valid_logloss
        self.every = every
        self.trace: list[tuple[int, float, float]] = []

    def train_step(self, batch: Batch) -> torch.Tensor:
        loss = super().train_step(batch)
        if self.global_step % self.every == 0:
            logits = predict_logits(self.model, self.valid, self.config.eval_batch_size)
            student = logloss_from_logits(logits, self._valid_labels())
            self.kd_weight = self.controller.observe(student, self.teacher_valid_logloss)
            self.trace.append((self.global_step, self.controller.gap, self.kd_weight))
        return loss

    def _valid_labels(self) -> np.ndarray:
        column = self.valid.label if self.config.target == "click" else self.valid.conversion
        return np.asarray(column, dtype=np.float64)


def _adaptive_slice(valid: "SplitArrays", config: OfflineDistillConfig) -> "SplitArrays":
    """The most recent ``offline_valid_rows`` rows (or the clicked ones for a conversion target)."""
    from crossadapt.training.evaluate import select_target_rows

    rows = select_target_rows(valid, config.target)
    keep = config.adaptive.offline_valid_rows if config.adaptive else len(rows)
    return rows.slice(max(len(rows) - keep, 0), len(rows))


def _set_embeddings_frozen(student: nn.Module, frozen: bool) -> None:
    if hasattr(student, "freeze_embeddings"):
        student.freeze_embeddings(frozen)
    else:  # any nn.Module with embedding_parameters()
        for p in student.embedding_parameters():
            p.requires_grad_(not frozen)


def distill_offline(
    student: nn.Module,
    train: "SplitArrays",
    config: OfflineDistillConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    valid: "SplitArrays | None" = None,
) -> OfflineDistillResult:
    """Progressive distillation of ``student`` on ``train`` (``D'_train``, e.g. the strategic sample).

    Args:
        student: the student CTRModel, embeddings already projected (trained in place and returned).
        train: the distillation rows. If it has no ``teacher_logit`` column, ``teacher`` is required and
            its logits are computed once here.
        config: the settings (defaults: the paper's).
        teacher: the frozen teacher; never trained here.
        valid: optional rows to measure after every epoch. With ``config.adaptive`` (required then) only its
            most recent ``offline_valid_rows`` rows are used, to drive λ and for the per-epoch figures.

    Returns:
        :class:`OfflineDistillResult` with per-phase history.
    """
    config = config or OfflineDistillConfig()
    if len(train) == 0:
        raise ValueError("distill_offline: the training rows are empty")
    started = time.perf_counter()
    teacher_seconds = 0.0
    needs_teacher_logits = config.kd_weight > 0.0 or config.adaptive is not None
    if train.teacher_logit is None and needs_teacher_logits:
        if teacher is None:
            raise ValueError("distill_offline: train has no teacher_logit column and no teacher was given")
        teacher.to(config.device)
        train = train.with_teacher_logit(cache_teacher_logits(teacher, train, config.teacher_batch_size))
        teacher_seconds = time.perf_counter() - started

    phases: list[tuple[Literal["frozen", "joint"], int, bool]] = (
        [("frozen", config.frozen_epochs, True), ("joint", config.joint_epochs, False)]
        if config.progressive
        else [("joint", config.frozen_epochs + config.joint_epochs, False)]
    )
    trainer = _make_trainer(student, config, teacher, valid)
    # With adaptive λ the per-epoch measurement uses the controller's bounded slice too: `valid` may be
    # all of D_train, and scoring it every epoch could cost more than training on the sample.
    measured = trainer.valid if isinstance(trainer, _AdaptiveOfflineTrainer) else valid
    records: list[PhaseRecord] = []
    epochs_done = 0
    try:
        for name, epochs, frozen in phases:
            if epochs == 0:
                continue
            _set_embeddings_frozen(trainer.model, frozen)
            # Offset the seed so phase 2 does not replay phase 1's shuffling order.
            trainer.config = config.train_config(epochs, seed_offset=epochs_done)
            trainer.epoch_losses = []
            fit = trainer.fit(train, measured)
            epochs_done += fit.epochs_run
            task, kd = trainer.pop_loss_parts()
            records.append(PhaseRecord(
                name=name, epochs=fit.epochs_run, steps=fit.steps, samples=fit.samples, seconds=fit.seconds,
                train_loss=list(trainer.epoch_losses),
                task_loss=task, kd_loss=kd,
                valid=[h["metrics"] for h in fit.history if "metrics" in h],
                kd_weight_end=trainer.kd_weight,
            ))
    finally:
        _set_embeddings_frozen(trainer.model, False)
    return OfflineDistillResult(
        student=trainer.model,
        phases=records,
        seconds=time.perf_counter() - started,
        teacher_logit_seconds=teacher_seconds,
        rows=len(train),
        kd_weight_trace=getattr(trainer, "trace", []),
        optimizer_state=trainer.optimizer.state_dict(),
    )


def _make_trainer(
    student: nn.Module, config: OfflineDistillConfig, teacher: nn.Module | None, valid: "SplitArrays | None"
) -> DistillationTrainer:
    common = dict(kd_weight=config.kd_weight, temperature=config.temperature, scale_kd_by_t2=config.scale_kd_by_t2,
                  task_logit_shift=config.task_logit_shift)
    if config.adaptive is None:
        return DistillationTrainer(student, config.train_config(1), **common)
    if valid is None:
        raise ValueError("adaptive distillation offline needs a validation slice (valid=...)")
    slice_ = _adaptive_slice(valid, config)
    if slice_.teacher_logit is None:
        if teacher is None:
            raise ValueError("adaptive distillation needs the teacher (or valid.teacher_logit) to score valid")
        slice_ = slice_.with_teacher_logit(cache_teacher_logits(teacher, slice_, config.teacher_batch_size))
    labels = slice_.label if config.target == "click" else slice_.conversion
    teacher_loss = logloss_from_logits(np.asarray(slice_.teacher_logit), np.asarray(labels))
    controller = AdaptiveKDController(config.adaptive, config.kd_weight, stage="offline")
    return _AdaptiveOfflineTrainer(
        student, config.train_config(1), controller=controller, valid=slice_,
        teacher_valid_logloss=teacher_loss, every=config.adaptive.offline_eval_every_steps, **common,
    )
