"""Progressive interaction-network distillation (paper Sec. 3.1.2, Eq. 5-6, Algorithm 1 lines 16-26).

Phase 1 ("frozen"): the student's embedding tables (already projected from the teacher) are frozen and only
the interaction network learns, on ``BCE(p_S, y) + λ · KD(p_S, p_T)``. Phase 2 ("joint"): everything learns
on the same loss. ``KD`` is :func:`~crossadapt.transfer.offline.losses.kd_cross_entropy` at temperature ``T``
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
  :class:`~crossadapt.transfer.offline.adaptive.AdaptiveKDController`.

Shared with the online stage and the baselines: :class:`StudentKDConfig` (the student's optimiser and KD
settings every KD config repeats) and :func:`forward_with_features` (logits plus the features a KD term
compares, from one forward: the teacher's in co-distillation, the student's in Hint-KD / RKD).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from crossadapt.data.batch import Batch
from crossadapt.training import TrainConfig, Trainer
from crossadapt.training.trainer import TrainingDivergedError
from crossadapt.training.evaluate import MetricDict, predict_logits
from crossadapt.transfer.offline.adaptive import AdaptiveKDController
from crossadapt.transfer.offline.config import OfflineDistillConfig, StudentKDConfig
from crossadapt.transfer.offline.losses import kd_cross_entropy, kd_kl, teacher_better_rows

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
    "DistillCursor",
    "ProgressiveDistillation",
    "logloss_from_logits",
    "adaptive_valid_slice",
]


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
        kd_gate: Literal["all", "teacher_better"] = "all",
    ):
        super().__init__(model, config)
        if kd_gate not in ("all", "teacher_better"):
            raise ValueError(f"kd_gate must be 'all' or 'teacher_better', got {kd_gate!r}")
        self.kd_gate = kd_gate
        self.kd_weight = float(kd_weight)
        self.task_logit_shift = float(task_logit_shift)
        self.kd_loss = kd_cross_entropy if kd_loss == "cross_entropy" else kd_kl
        self.teacher_context: torch.Tensor | None = None
        self.temperature = float(temperature)
        self.scale_kd_by_t2 = scale_kd_by_t2
        self.last_logits: torch.Tensor | None = None  # [B] detached logits of the latest training forward
        self._parts = torch.zeros(3, device=self.device)  # task sum, kd sum, steps
        self.epoch_losses: list[float] = []  # mean training loss of each epoch of the latest fit
        # Data-parallel training: the forward runs through a DistributedDataParallel wrapper of `model`
        # (its backward averages the ranks' gradients), and each rank's loss is scaled by its share of
        # the global batch times the world size, so the average is the global batch's mean loss.
        self.forward_module: nn.Module | None = None
        self.loss_scale = 1.0

    def forward(self, batch: Batch) -> torch.Tensor:
        module = self.forward_module if self.forward_module is not None else self.model
        return module(batch.categorical, batch.numerical)

    def compute_loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        self.last_logits = logits.detach()
        task = super().compute_loss(batch, logits + self.task_logit_shift if self.task_logit_shift else logits)
        if self.kd_weight == 0.0:
            self._parts += torch.stack([task.detach(), torch.zeros_like(task), torch.ones_like(task)])
            return task * self.loss_scale if self.loss_scale != 1.0 else task
        if batch.teacher_logit is None:
            raise ValueError("distillation needs teacher logits: the batch has no teacher_logit column")
        rows = (teacher_better_rows(logits, batch.teacher_logit, self.target(batch))
                if self.kd_gate == "teacher_better" else None)
        kd = self.kd_loss(logits, batch.teacher_logit, self.temperature, scale_by_t2=self.scale_kd_by_t2,
                          row_weights=rows)
        self._parts += torch.stack([task.detach(), kd.detach(), torch.ones_like(task)])
        loss = task + self.kd_weight * kd
        return loss * self.loss_scale if self.loss_scale != 1.0 else loss

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
    student's Adam state (:class:`~crossadapt.transfer.online.codistillation.OnlineCoDistillConfig`).
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
    """Adds the validation-driven λ of :mod:`crossadapt.transfer.offline.adaptive` to the offline loop."""

    def __init__(self, *args, controller: AdaptiveKDController, valid: "SplitArrays",
                 teacher_valid_logloss: float, every: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.controller = controller
        self.valid = valid
        self.teacher_valid_logloss = teacher_valid_logloss
        self.every = every
        self.trace: list[tuple[int, float, float]] = []

    #: Data parallel (set by ProgressiveDistillation): rank 0 measures the student and every rank's controller
    #: observes that figure, so all ranks take the same λ at the same step and hold the same controller state.
    #: Measuring on each rank is not enough: with BatchNorm a rank's running statistics are its own shard's
    #: until DDP broadcasts rank 0's buffers at the next forward, so the ranks' LogLosses, gaps and λ differ
    #: (and DDP would average gradients of different losses).
    distributed = False

    def train_step(self, batch: Batch) -> torch.Tensor:
        loss = super().train_step(batch)
        if self.global_step % self.every == 0:
            student = self._student_valid_logloss()
            self.kd_weight = self.controller.observe(student, self.teacher_valid_logloss)
            self.trace.append((self.global_step, self.controller.gap, self.kd_weight))
        return loss

    def _student_valid_logloss(self) -> float:
        if not self.distributed:
            return logloss_from_logits(predict_logits(self.model, self.valid, self.config.eval_batch_size),
                                       self._valid_labels())
        value = torch.zeros((), dtype=torch.float64, device=self.device)  # on the device: nccl needs it there
        if torch.distributed.get_rank() == 0:  # the other ranks skip the measurement and wait for its figure
            value.fill_(logloss_from_logits(predict_logits(self.model, self.valid, self.config.eval_batch_size),
                                            self._valid_labels()))
        torch.distributed.broadcast(value, src=0)
        return float(value)

    def _valid_labels(self) -> np.ndarray:
        column = self.valid.label if self.config.target == "click" else self.valid.conversion
        return np.asarray(column, dtype=np.float64)


def adaptive_valid_slice(valid: "SplitArrays", config: OfflineDistillConfig) -> "SplitArrays":
    """The rows adaptive λ measures: the most recent ``offline_valid_rows`` of ``valid`` (of its clicked rows for
    a conversion target). Applied to its own output it returns the same rows, so a caller may slice (and
    score with the teacher) up front, e.g. a service that reads only what the run needs."""
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

    The loop is :class:`ProgressiveDistillation`, which can also stop at any step and resume there.
    """
    return ProgressiveDistillation(student, train, config, teacher=teacher, valid=valid).run()


@dataclass
class DistillCursor:
    """Where a progressive run stands: the next step trains batch ``batch`` of epoch ``epoch`` of phase ``phase``
    (indices into :attr:`ProgressiveDistillation.phases`). ``steps``: optimiser steps of the whole run so far;
    ``epoch_loss``: the summed training loss of the epoch's batches so far."""

    phase: int = 0
    epoch: int = 0
    batch: int = 0
    steps: int = 0
    epoch_loss: float = 0.0


#: ``callback(run, event)`` after every optimiser step (``"step"``) and at every epoch end (``"epoch"``).
#: The cursor then points at the next step, so :meth:`ProgressiveDistillation.state_dict` taken inside the
#: callback resumes exactly after it; raising from the callback stops the run there.
DistillCallback = Callable[["ProgressiveDistillation", Literal["step", "epoch"]], None]


class ProgressiveDistillation:
    """:func:`distill_offline` as an object that can be checkpointed at any step and resumed exactly.

    Phases ``frozen`` (embeddings fixed) then ``joint``, each a fixed number of epochs over ``train``
    (reshuffled per epoch with ``seed + epoch``; the joint phase's seed is offset by the frozen epochs), one
    optimiser for both. :meth:`state_dict` holds everything but the model's weights (cursor, optimiser, RNG,
    per-phase records, and with adaptive λ its controller); a run built on the saved weights and given :meth:`load_state_dict` takes the same
    steps on the same batches as the uninterrupted run, so its result is bit-for-bit the same.

    Data parallel (``distributed=True``): ``torch.distributed`` must be initialised; every rank builds the same
    run (same rows, weights and seed) and trains on its contiguous share of each global batch of
    ``config.batch_size`` rows through a ``DistributedDataParallel`` wrapper (rebuilt per phase, because
    it registers only the parameters that then require a gradient). Each rank's loss is scaled by
    ``share · world_size / batch`` so the averaged gradient is the global batch's mean gradient: the run
    equals the one-process run up to float summation order (dropout masks differ, being drawn per rank).
    With adaptive λ rank 0 measures the student and broadcasts the LogLoss: every rank's controller observes
    the same figures, so all take the same λ at the same step and hold rank 0's controller state.
    """

    def __init__(
        self,
        student: nn.Module,
        train: "SplitArrays",
        config: OfflineDistillConfig | None = None,
        *,
        teacher: nn.Module | None = None,
        valid: "SplitArrays | None" = None,
        distributed: bool = False,
    ) -> None:
        self.config = config = config or OfflineDistillConfig()
        if len(train) == 0:
            raise ValueError("distill_offline: the training rows are empty")
        self._started = time.perf_counter()
        self.teacher_logit_seconds = 0.0
        needs_teacher_logits = config.kd_weight > 0.0 or config.adaptive is not None
        if train.teacher_logit is None and needs_teacher_logits:
            if teacher is None:
                raise ValueError("distill_offline: train has no teacher_logit column and no teacher was given")
            teacher.to(config.device)
            train = train.with_teacher_logit(cache_teacher_logits(teacher, train, config.teacher_batch_size))
            self.teacher_logit_seconds = time.perf_counter() - self._started
        self.train = train
        self.phases: list[tuple[Literal["frozen", "joint"], int, bool]] = [
            phase for phase in (
                [("frozen", config.frozen_epochs, True), ("joint", config.joint_epochs, False)]
                if config.progressive else [("joint", config.frozen_epochs + config.joint_epochs, False)]
            ) if phase[1] > 0
        ]
        self.trainer = _make_trainer(student, config, teacher, valid)
        # With adaptive λ the per-epoch measurement uses the controller's bounded slice too: `valid` may be
        # all of D_train, and scoring it every epoch could cost more than training on the sample.
        self.measured = self.trainer.valid if isinstance(self.trainer, _AdaptiveOfflineTrainer) else valid
        self.distributed = distributed
        if isinstance(self.trainer, _AdaptiveOfflineTrainer):
            self.trainer.distributed = distributed
        self.rank, self.world_size = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
            if distributed else (0, 1)
        self.cursor = DistillCursor()
        self.records: list[PhaseRecord] = []
        self._seconds_before = 0.0  # run time spent before a resume

    # -- size ----------------------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.train) // self.config.batch_size)

    @property
    def total_steps(self) -> int:
        return sum(epochs for _, epochs, _ in self.phases) * self.steps_per_epoch

    @property
    def total_epochs(self) -> int:
        return sum(epochs for _, epochs, _ in self.phases)

    @property
    def epochs_done(self) -> int:
        return sum(epochs for _, epochs, _ in self.phases[: self.cursor.phase]) + self.cursor.epoch

    @property
    def finished(self) -> bool:
        return self.cursor.phase >= len(self.phases)

    @property
    def phase_name(self) -> str:
        return self.phases[self.cursor.phase][0] if not self.finished else "done"

    # -- the loop ------------------------------------------------------------------------------------

    def run(self, callback: DistillCallback | None = None) -> OfflineDistillResult:
        """Train from the cursor to the end (or until ``callback`` raises) and return the result."""
        started = time.perf_counter()
        try:
            while not self.finished:
                self._run_phase(callback)
        finally:
            _set_embeddings_frozen(self.trainer.model, False)
            self.trainer.forward_module = None
            self.trainer.loss_scale = 1.0
        return OfflineDistillResult(
            student=self.trainer.model,
            phases=self.records,
            seconds=self._seconds_before + (time.perf_counter() - started) + self.teacher_logit_seconds,
            teacher_logit_seconds=self.teacher_logit_seconds,
            rows=len(self.train),
            kd_weight_trace=getattr(self.trainer, "trace", []),
            optimizer_state=self.trainer.optimizer.state_dict(),
        )

    def _run_phase(self, callback: DistillCallback | None) -> None:
        from crossadapt.data import iter_batches

        cursor, trainer = self.cursor, self.trainer
        name, epochs, frozen = self.phases[cursor.phase]
        _set_embeddings_frozen(trainer.model, frozen)
        # Offset the seed so phase 2 does not replay phase 1's shuffling order.
        trainer.config = cfg = self.config.train_config(
            epochs, seed_offset=sum(e for _, e, _ in self.phases[: cursor.phase]))
        if cursor.epoch == 0 and cursor.batch == 0:  # the phase starts here (a resume restored the RNG)
            torch.manual_seed(cfg.seed)  # dropout and any other torch randomness of the phase
            trainer.epoch_losses = []
            self.records.append(PhaseRecord(name=name, epochs=0, steps=0, samples=0, seconds=0.0))
        record = self.records[cursor.phase]
        if self.distributed:
            self._wrap_for_data_parallel()
        started = time.perf_counter()
        while cursor.epoch < epochs:
            epoch = cursor.epoch
            trainer.on_epoch_start(epoch)
            loss_sum = torch.full((), cursor.epoch_loss, device=trainer.device)
            batches = iter_batches(self.train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed + epoch)
            for batch in itertools.islice(batches, cursor.batch, None):
                if trainer.device.type != "cpu":
                    batch = batch.to(trainer.device)
                loss_sum += trainer.train_step(self._share(batch))
                cursor.batch += 1
                cursor.steps += 1
                record.steps += 1
                record.samples += len(batch)
                if cursor.batch % cfg.log_every_steps == 0:
                    _check_finite(float(loss_sum) / cursor.batch, trainer.global_step)
                if callback is not None:
                    cursor.epoch_loss = float(loss_sum)
                    record.seconds += time.perf_counter() - started
                    callback(self, "step")
                    started = time.perf_counter()
            train_loss = float(loss_sum) / max(cursor.batch, 1)
            _check_finite(train_loss, trainer.global_step)
            metrics = self._validate(epoch) if self.measured is not None else None
            if metrics is not None:
                record.valid.append(metrics)
            trainer.on_epoch_end(epoch, train_loss, metrics)
            record.train_loss.append(train_loss)
            record.epochs = epoch + 1
            cursor.epoch, cursor.batch, cursor.epoch_loss = epoch + 1, 0, 0.0
            if cursor.epoch == epochs:  # phase end: its figures, then the cursor moves to the next phase
                record.task_loss, record.kd_loss = trainer.pop_loss_parts()
                record.kd_weight_end = trainer.kd_weight
                cursor.phase, cursor.epoch = cursor.phase + 1, 0
            record.seconds += time.perf_counter() - started
            if callback is not None:
                callback(self, "epoch")
            started = time.perf_counter()
            if cursor.epoch == 0:  # the phase ended
                break

    def _validate(self, epoch: int) -> MetricDict:
        """Trainer.fit's end-of-epoch validation (a constant predictor is refused there too)."""
        from crossadapt.training.trainer import FitResult, _EarlyStopping

        result = FitResult(steps=self.records[self.cursor.phase].steps)
        self.trainer._validate(self.measured, _EarlyStopping(self.trainer.config), result, epoch)
        return result.history[-1]["metrics"]

    # -- data parallel -------------------------------------------------------------------------------

    def _wrap_for_data_parallel(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        device = self.trainer.device
        self.trainer.forward_module = DistributedDataParallel(
            self.trainer.model, device_ids=[device] if device.type == "cuda" else None)

    def _share(self, batch: Batch) -> Batch:
        """This rank's contiguous share of a global batch, and the loss scale that makes DDP's gradient
        average equal the global batch's mean gradient. A rank whose share is empty (a last batch smaller
        than the world) trains on one row at scale 0: its gradient is zero, but it joins the all-reduce."""
        if not self.distributed:
            return batch
        rows = len(batch)
        lo, hi = rows * self.rank // self.world_size, rows * (self.rank + 1) // self.world_size
        self.trainer.loss_scale = (hi - lo) * self.world_size / rows
        if hi == lo:
            lo, hi = 0, 1
        return replace(batch, **{f.name: getattr(batch, f.name)[lo:hi] for f in fields(batch)
                                 if getattr(batch, f.name) is not None})

    # -- checkpointing -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume exactly, except the model's weights (save those beside it).

        Plain Python values and tensors only: ``torch.save`` it and load with ``weights_only=True``.
        """
        trainer = self.trainer
        state: dict[str, Any] = {
            "cursor": asdict(self.cursor),
            "optimizer": trainer.optimizer.state_dict(),
            "global_step": trainer.global_step,
            "loss_parts": trainer._parts.tolist(),
            "epoch_losses": list(trainer.epoch_losses),
            "records": [asdict(record) for record in self.records],
            "rng": torch.get_rng_state(),
            "seconds": self._seconds_before + (time.perf_counter() - self._started),
            "rows": len(self.train),
            "phases": [list(phase) for phase in self.phases],
        }
        if isinstance(trainer, _AdaptiveOfflineTrainer):  # adaptive λ: the controller and λ so far
            state["adaptive"] = {"controller": trainer.controller.state_dict(), "kd_weight": trainer.kd_weight,
                                 "trace": [list(entry) for entry in trainer.trace]}
        if trainer.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(trainer.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (call on a run built on the saved weights, same rows and config)."""
        if [list(phase) for phase in self.phases] != [list(p) for p in state["phases"]] or state["rows"] != len(self.train):
            raise ValueError(f"the saved run had phases {state['phases']} over {state['rows']} rows; this one has "
                             f"{[list(p) for p in self.phases]} over {len(self.train)}")
        trainer = self.trainer
        self.cursor = DistillCursor(**state["cursor"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.global_step = int(state["global_step"])
        trainer._parts = torch.tensor(state["loss_parts"], dtype=trainer._parts.dtype, device=trainer.device)
        trainer.epoch_losses = list(state["epoch_losses"])
        self.records = [PhaseRecord(**record) for record in state["records"]]
        adaptive = state.get("adaptive")
        if (adaptive is not None) != isinstance(trainer, _AdaptiveOfflineTrainer):
            raise ValueError("the saved run and this one differ in using adaptive λ (config.adaptive)")
        if adaptive is not None:
            trainer.controller.load_state_dict(adaptive["controller"])
            trainer.kd_weight = float(adaptive["kd_weight"])
            trainer.trace = [(int(step), float(gap), float(weight)) for step, gap, weight in adaptive["trace"]]
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and trainer.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], trainer.device)
        self._seconds_before = float(state["seconds"])
        self._started = time.perf_counter()


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise TrainingDivergedError(f"training loss is {loss} at step {step}; lower the learning rates")


def _make_trainer(
    student: nn.Module, config: OfflineDistillConfig, teacher: nn.Module | None, valid: "SplitArrays | None"
) -> DistillationTrainer:
    common = dict(kd_weight=config.kd_weight, temperature=config.temperature, scale_kd_by_t2=config.scale_kd_by_t2,
                  task_logit_shift=config.task_logit_shift, kd_gate=config.kd_gate)
    if config.adaptive is None:
        return DistillationTrainer(student, config.train_config(1), **common)
    if valid is None:
        raise ValueError("adaptive distillation offline needs a validation slice (valid=...)")
    slice_ = adaptive_valid_slice(valid, config)
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
