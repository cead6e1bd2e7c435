"""Online asymmetric co-distillation over the stream (paper Sec. 3.2, Eq. 10-12 and 15, Algorithm 1 l. 36-50).

For each stream batch ``B_t`` (time order, never shuffled; ``t = 1, 2, ...``):

1. ``B_aug = B_t ∪ Ψ(D_train, r_enh · |B_t|)``: replayed training rows appended AFTER the stream rows;
2. the teacher (eval mode) scores ``B_aug``; these logits are the KD targets and, with co-evolution, the
   teacher's ``BCE`` on ``B_aug`` is back-propagated into its ``.grad`` (autograd sums: Eq. 11);
3. the student takes one step on ``BCE + λ · KD`` over ``B_aug`` (Eq. 10);
4. if ``t mod τ = 0`` the teacher steps on the accumulated gradient and clears it (Eq. 12), first at ``t = τ``.

Prequential figures: the predictions of both models on ``B_t`` are taken BEFORE either trains on it (the
student's from its training forward when that forward is deterministic, else from a separate eval-mode
forward; the teacher's are the logits of step 2) and recorded per window of ``window_batches`` batches
(:mod:`crossadapt.transfer.online.prequential`).

This module is the loop; the pieces it wires live beside it and are re-exported here: the τ-step teacher
(:class:`~crossadapt.transfer.online.teacher_schedule.AsymmetricTeacher`, also driven by the KD baselines with
τ = 1) and the prequential recorder (:class:`~crossadapt.transfer.online.prequential.PrequentialRecorder`).

API: :func:`codistill_online` runs one stream; :class:`CoDistiller` is the same loop for a stream that
arrives in chunks (:meth:`CoDistiller.consume` per chunk, :meth:`CoDistiller.finish` once) and for the KD
baselines' offline epochs (:meth:`CoDistiller.train_epochs`).

Choices (the teacher's optimiser and eval mode: :mod:`crossadapt.transfer.online.teacher_schedule`):
- ``partial_window``: ``"drop"`` (default, as Algorithm 1) or ``"flush"`` the ``t_end mod τ`` batches
  pending at the end (see :meth:`AsymmetricTeacher.finish`); the result reports which and how many.
- ``collaborative`` (beyond the paper, default off): the teacher's loss also pulls it toward the student on
  the rows where the student knows more (:mod:`crossadapt.transfer.online.collaborative`); the student's
  eval-mode logits of ``B_aug`` before its step are the targets.
- Ablations: ``co_evolution=False`` freezes the teacher (no gradient at all); ``asymmetric=False`` steps the
  teacher every batch (τ = 1); ``distillation=False`` sets λ = 0 (the teacher still predicts and learns).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossadapt.data.batch import Batch
from crossadapt.training.evaluate import MetricDict, evaluate_model
from crossadapt.transfer.offline.adaptive import AdaptiveKDController
from crossadapt.transfer.offline.distillation import DistillationTrainer
from crossadapt.transfer.online.collaborative import CollaborativeTeacher
from crossadapt.transfer.online.config import OnlineCoDistillConfig
from crossadapt.transfer.online.prequential import (
    PrequentialRecorder,
    WindowRecord,
    check_time_order,
    eval_logits,
    forward_is_deterministic,
)
from crossadapt.transfer.online.teacher_schedule import AsymmetricTeacher

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays

__all__ = [
    "OnlineCoDistillConfig",
    "AsymmetricTeacher",
    "PrequentialRecorder",
    "WindowRecord",
    "OnlineCoDistillResult",
    "CoDistiller",
    "build_codistiller",
    "forward_is_deterministic",
    "codistill_online",
]


@dataclass
class OnlineCoDistillResult:
    """What :func:`codistill_online` (or a baseline's online stage) did.

    ``student_prequential`` / ``teacher_prequential``: metrics of the before-training predictions over the
    whole stream (empty if nothing was streamed). ``teacher_update_steps``: the values of ``t`` at which the
    teacher stepped. ``partial_window_batches``: batches pending at the end (``t_end mod τ``) and
    ``partial_window`` what was done with them. ``seconds``: loop wall time, holdout evaluation excluded.
    """

    student: nn.Module
    teacher: nn.Module | None
    batches: int
    rows: int
    replay_rows: int
    teacher_update_steps: list[int]
    partial_window: Literal["drop", "flush"]
    partial_window_batches: int
    student_prequential: MetricDict
    teacher_prequential: MetricDict
    windows: list[WindowRecord]
    seconds: float
    kd_weight_trace: list[tuple[int, float, float]] = field(default_factory=list)
    #: Collaborative co-distillation: mean weight a_i of the teacher's KD term toward the student over the
    #: rows it accumulated (the share of the stream where the student taught the teacher); None when off.
    collaboration_share: float | None = None

    @property
    def teacher_updates(self) -> int:
        return len(self.teacher_update_steps)

    def curve(self, model: Literal["student", "teacher"] = "student") -> tuple[list[float], list[float]]:
        """(seconds, prequential window AUC) for convergence plots (windows with an undefined AUC skipped)."""
        pairs = [(w.seconds, w.student_auc if model == "student" else w.teacher_auc) for w in self.windows]
        pairs = [(s, a) for s, a in pairs if a is not None]
        return [s for s, _ in pairs], [a for _, a in pairs]


class CoDistiller:
    """The per-batch step of co-distillation, usable over a stream (:meth:`consume`) or offline epochs.

    Args:
        student_trainer: a :class:`DistillationTrainer` (or subclass: the Hint-KD and RKD baselines) that
            owns the student and its optimiser; its ``kd_weight`` is λ.
        teacher: an :class:`AsymmetricTeacher`, or None to stream a student alone (scratch baselines).
        config: window size, τ-policy at the end, adaptive λ.
        replay: a ReplayController and the pool (``SplitArrays``) its row ids point into, or None.

    Call :meth:`consume` once per consecutive chunk of the stream, then :meth:`finish` once.
    """

    def __init__(self, student_trainer: DistillationTrainer, teacher: AsymmetricTeacher | None,
                 config: OnlineCoDistillConfig, *, replay: Any = None, replay_pool: "SplitArrays | None" = None):
        if (replay is None) != (replay_pool is None):
            raise ValueError("give both replay (a ReplayController) and replay_pool (the rows it draws from)")
        if replay is not None and replay.pool_size != len(replay_pool):
            raise ValueError(f"replay controller pool_size {replay.pool_size} != replay_pool rows {len(replay_pool)}")
        if teacher is None and student_trainer.kd_weight > 0:
            raise ValueError("distillation (kd_weight > 0) needs a teacher")
        self.trainer, self.teacher, self.config = student_trainer, teacher, config
        self.replay, self.replay_pool = replay, replay_pool
        self.device = student_trainer.device
        self.recorder = PrequentialRecorder(config.window_batches)
        self.controller = (AdaptiveKDController(config.adaptive, student_trainer.kd_weight, stage="online")
                           if config.adaptive is not None and teacher is not None else None)
        self.deterministic = forward_is_deterministic(student_trainer.model)
        self.step = self.rows = self.replay_rows = 0  # streamed batches / rows / replayed rows
        self.teacher_clock = 0  # every batch the teacher has seen (t of Eq. 11-12)
        self.seconds = 0.0
        self._finished = False

    # -- one step ------------------------------------------------------------------------------------

    def train_batch(self, batch: Batch, *, record: bool = True) -> None:
        """Steps 1-4 of the module docstring on one batch. ``record=False`` (offline epochs) skips the
        prequential record and the stream counters; the teacher's clock ``t`` counts every batch."""
        t = self.teacher_clock + 1
        n = len(batch)
        if self.replay is not None and self.replay.config.rolling:
            self.replay.observe(batch.categorical.numpy(), batch.numerical.numpy())
        aug = batch
        if self.replay is not None:
            ids = self.replay.draw(n)
            if len(ids):
                aug = Batch.concat([batch, self.replay_pool.take(ids).to_batch()])
                self.replay_rows += len(ids)
        aug = aug.to(self.device) if self.device.type != "cpu" else aug
        labels = self.trainer.target(aug)
        teacher_logits = None
        if self.teacher is not None:
            teacher_logits, context = self.teacher.logits_and_features(aug, self.trainer.teacher_features)
            self.trainer.teacher_context = context
            aug = replace(aug, teacher_logit=teacher_logits.detach())
        collaborative = isinstance(self.teacher, CollaborativeTeacher)
        student_before = None  # eval-mode logits before the student's step: of B_t, or of B_aug if collaborative
        if not self.deterministic and (record or collaborative):
            student_before = eval_logits(self.trainer.model, aug, len(aug) if collaborative else n)
        self.trainer.train_step(aug)
        if student_before is None and (record or collaborative):
            student_before = self.trainer.last_logits  # a deterministic training forward = the eval forward
        if record:
            self.recorder.add(labels[:n], student_before[:n], None if teacher_logits is None else teacher_logits[:n])
        if collaborative:
            self.teacher.accumulate(teacher_logits, labels, aug, student_logits=student_before)
        elif self.teacher is not None:
            self.teacher.accumulate(teacher_logits, labels, aug)
        if self.teacher is not None:
            self.teacher.maybe_step(t)
        if record and self.controller is not None:
            self._adapt(labels[:n], student_before[:n], teacher_logits[:n].detach())
        self.teacher_clock = t
        if record:
            self.step, self.rows = self.step + 1, self.rows + n

    def _adapt(self, labels: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor) -> None:
        losses = torch.stack([F.binary_cross_entropy_with_logits(student.float(), labels.float()),
                              F.binary_cross_entropy_with_logits(teacher.float(), labels.float())]).tolist()
        self.trainer.kd_weight = self.controller.observe(losses[0], losses[1])
        if self.replay is not None and abs(self.replay.ratio_scale - self.controller.replay_scale) >= 0.01:
            self.replay.set_ratio_scale(self.controller.replay_scale)

    # -- loops ---------------------------------------------------------------------------------------

    def consume(self, stream: "SplitArrays", *, holdout: "SplitArrays | None" = None,
                holdout_every_windows: int = 0) -> None:
        """Train on ``stream`` in row (time) order, one pass, recording prequential windows.

        ``holdout``: evaluated every ``holdout_every_windows`` windows (0: never) and stored in the window
        record; its time is excluded from ``seconds``.
        """
        from crossadapt.data import iter_batches

        if self._finished:
            raise RuntimeError("this CoDistiller has finished; build a new one")
        check_time_order(stream)
        stream = self.fit_vocabulary(stream)
        if self.config.target == "conversion":
            from crossadapt.training.evaluate import select_target_rows

            stream = select_target_rows(stream, "conversion")
        started = time.perf_counter() - self.seconds
        for batch in iter_batches(stream, self.config.batch_size, shuffle=False):
            self.train_batch(batch)
            if self.recorder.pending_batches == self.config.window_batches:
                _synchronize(self.device)  # queued GPU work belongs to this window's time
                self.seconds = time.perf_counter() - started
                due = bool(holdout is not None and holdout_every_windows
                           and (len(self.recorder.windows) + 1) % holdout_every_windows == 0)
                self._close_window(holdout if due else None)
                started = time.perf_counter() - self.seconds
        _synchronize(self.device)
        self.seconds = time.perf_counter() - started

    def fit_vocabulary(self, stream: "SplitArrays") -> "SplitArrays":
        """``stream`` as the models can read it: with ``grow_vocabulary`` both models' tables grow to the
        largest id per field (:meth:`grow_to`); otherwise ids beyond the student's tables become ``<UNK>``."""
        from crossadapt.data.growth import ids_for_sizes
        from crossadapt.models.growth import table_sizes

        if not len(stream):
            return stream
        needed = stream.categorical.max(axis=0).astype(np.int64) + 1
        if self.config.grow_vocabulary:
            self.grow_to(needed.tolist())
            return stream
        sizes = table_sizes(self.trainer.model)
        if self.teacher is not None:
            sizes = np.minimum(sizes, table_sizes(self.teacher.model))
        if bool((needed <= sizes).all()):
            return stream
        return replace(stream, categorical=ids_for_sizes(stream.categorical, sizes))

    def grow_to(self, sizes: list[int]) -> dict[str, int]:
        """Grow the teacher's, then the student's tables to ``sizes`` rows per field; returns the student's
        added rows per field. A new student row starts from the teacher's row of the same id projected to the
        student's width (the projection fitted on the teacher's whole table, as the switch projects) when
        the teacher had that id before growing, else from the initialiser; the teacher's new rows start from
        its initialiser. Both optimisers' per-row state gets zero rows for the new ids."""
        from crossadapt.models.growth import grow_model, table_sizes
        from crossadapt.transfer.projection import table_projection

        student = self.trainer.model
        init: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.teacher is not None:
            teacher = self.teacher.model
            teacher_sizes = table_sizes(teacher)
            for field, old, new, had in zip(student.embedding.spec.categorical, table_sizes(student), sizes,
                                            teacher_sizes):  # fmt: skip
                if new <= old or had <= old:
                    continue  # nothing to add, or the teacher has none of the new ids
                table = teacher.embedding.get_table(field.name).float().cpu().numpy()
                width = student.embedding.embedding_dim
                projection = table_projection(table, width, self.config.projection_seed)
                ids = np.arange(old, new)
                rows = np.zeros((len(ids), width), dtype=np.float32)
                known = ids < had
                rows[known] = projection.apply(table[ids[known]])
                init[field.name] = (torch.from_numpy(rows), torch.from_numpy(known))
            grow_model(teacher, sizes, _optimizers(self.teacher.optimizer))
        return grow_model(student, sizes, _optimizers(self.trainer.optimizer), init=init)

    def train_epochs(self, arrays: "SplitArrays", epochs: int, *, seed: int = 0) -> float:
        """Offline epochs over ``arrays`` (reshuffled every epoch, nothing recorded); returns seconds."""
        from crossadapt.data import iter_batches

        started = time.perf_counter()
        for epoch in range(epochs):
            for batch in iter_batches(arrays, self.config.batch_size, shuffle=True, seed=seed + epoch):
                self.train_batch(batch, record=False)
        _synchronize(self.device)
        return time.perf_counter() - started

    def _close_window(self, holdout: "SplitArrays | None") -> None:
        record = self.recorder.close_window(
            self.step, self.seconds, teacher_updates=len(self.teacher.update_steps) if self.teacher else 0,
            kd_weight=self.trainer.kd_weight, replay_ratio=self.replay.ratio if self.replay is not None else 0.0)
        if record is None and self.recorder.windows:
            record = self.recorder.windows[-1]  # nothing pending: the holdout belongs to the last window
        if record is not None and holdout is not None:
            record.holdout = evaluate_model(self.trainer.model, holdout, batch_size=65536)

    # -- checkpointing -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume the stream exactly after the last consumed batch, except both models' weights
        (save those beside it): counters, the student's optimiser, the teacher's schedule (optimiser and
        pending window), the replay draws' random state, adaptive λ's controller, torch's RNG (dropout) and the
        prequential windows (closed ones and the rows of the open one; the per-row history behind :meth:`PrequentialRecorder.totals`
        is not kept, so after a resume the totals cover the rows since the resume). Plain values and tensors
        only: ``torch.save`` it and load with ``weights_only=True``."""
        if self._finished:
            raise RuntimeError("this CoDistiller has finished; checkpoint before finish()")
        trainer, recorder = self.trainer, self.recorder
        state: dict[str, Any] = {
            "step": self.step, "rows": self.rows, "replay_rows": self.replay_rows,
            "teacher_clock": self.teacher_clock, "seconds": self.seconds,
            "student_optimizer": trainer.optimizer.state_dict(), "global_step": trainer.global_step,
            "kd_weight": trainer.kd_weight, "loss_parts": trainer._parts.tolist(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "replay": self.replay.state_dict() if self.replay is not None else None,
            "rng": torch.get_rng_state(),
            # adaptive λ: the controller's EMAs and history (λ itself is the trainer's kd_weight above)
            "adaptive": self.controller.state_dict() if self.controller is not None else None,
            # The recorder is this loop's own; its open window is part of the exact state.
            "prequential": {
                "windows": [asdict(window) for window in recorder.windows],
                "first_batch": recorder._first_batch,
                "open": [[part.cpu() if part is not None else None for part in parts] for parts in recorder._parts],
            },
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` on a CoDistiller built like the saved one, on the saved weights."""
        if (state["teacher"] is None) != (self.teacher is None) or (state["replay"] is None) != (self.replay is None):
            raise ValueError("the saved co-distillation and this one differ in having a teacher or a replay pool")
        if (state.get("adaptive") is not None) != (self.controller is not None):
            raise ValueError("the saved co-distillation and this one differ in using adaptive λ (config.adaptive)")
        trainer, recorder = self.trainer, self.recorder
        self.step, self.rows, self.replay_rows = int(state["step"]), int(state["rows"]), int(state["replay_rows"])
        self.teacher_clock, self.seconds = int(state["teacher_clock"]), float(state["seconds"])
        trainer.optimizer.load_state_dict(state["student_optimizer"])
        trainer.global_step, trainer.kd_weight = int(state["global_step"]), float(state["kd_weight"])
        trainer._parts = torch.tensor(state["loss_parts"], dtype=trainer._parts.dtype, device=self.device)
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])
        if self.controller is not None:
            self.controller.load_state_dict(state["adaptive"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        prequential = state["prequential"]
        recorder.windows = [WindowRecord(**window) for window in prequential["windows"]]
        recorder._first_batch = int(prequential["first_batch"])
        recorder._parts = [tuple(None if part is None else part.to(self.device) for part in parts)
                           for parts in prequential["open"]]

    def finish(self, *, holdout: "SplitArrays | None" = None) -> OnlineCoDistillResult:
        """Close the last (partial) prequential window, apply the partial-window policy, return the result."""
        if self._finished:
            raise RuntimeError("finish() was already called")
        self._finished = True
        self._close_window(holdout)
        pending = self.teacher.pending if self.teacher is not None else 0
        if self.teacher is not None:
            self.teacher.finish(self.teacher_clock, self.config.partial_window)
        student_total, teacher_total = self.recorder.totals()
        return OnlineCoDistillResult(
            student=self.trainer.model, teacher=self.teacher.model if self.teacher else None, batches=self.step,
            rows=self.rows, replay_rows=self.replay_rows,
            teacher_update_steps=list(self.teacher.update_steps) if self.teacher else [],
            partial_window=self.config.partial_window, partial_window_batches=pending,
            student_prequential=student_total, teacher_prequential=teacher_total if self.teacher else {},
            windows=self.recorder.windows, seconds=self.seconds,
            kd_weight_trace=list(self.controller.history) if self.controller else [],
            collaboration_share=self.teacher.taught_share if isinstance(self.teacher, CollaborativeTeacher) else None,
        )


def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The plain torch optimisers behind a TrainOptimizer (or a plain one; none for a frozen teacher)."""
    if optimizer is None:
        return []
    return list(getattr(optimizer, "optimizers", [optimizer]))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_codistiller(teacher: nn.Module, student: nn.Module, config: OnlineCoDistillConfig, *,
                      replay: Any = None, replay_pool: "SplitArrays | None" = None,
                      student_optimizer_state: list[dict] | None = None) -> CoDistiller:
    """The CrossAdapt online stage wired from a config (both models move to ``config.device``)."""
    trainer = DistillationTrainer(student, config.student_train_config(target=config.target),
                                  kd_weight=config.effective_kd_weight, temperature=config.temperature,
                                  scale_kd_by_t2=config.scale_kd_by_t2, kd_gate=config.kd_gate)
    if student_optimizer_state is not None:
        trainer.optimizer.load_state_dict(student_optimizer_state)
    torch.manual_seed(config.seed)  # dropout of the student's training forwards
    schedule = dict(interval=config.effective_interval, optimizer=config.teacher_optimizer,
                    embedding_lr=config.teacher_embedding_lr, dense_lr=config.teacher_dense_lr,
                    trainable=config.co_evolution)
    teacher = teacher.to(trainer.device)
    asym = (CollaborativeTeacher(teacher, config.collaborative, **schedule) if config.collaborative is not None
            else AsymmetricTeacher(teacher, **schedule))
    return CoDistiller(trainer, asym, config, replay=replay, replay_pool=replay_pool)


def codistill_online(teacher: nn.Module, student: nn.Module, stream: "SplitArrays",
                     config: OnlineCoDistillConfig | None = None, *, replay: Any = None,
                     replay_pool: "SplitArrays | None" = None, holdout: "SplitArrays | None" = None,
                     holdout_every_windows: int = 0,
                     student_optimizer_state: list[dict] | None = None) -> OnlineCoDistillResult:
    """Asymmetric co-distillation of ``student`` and ``teacher`` over ``stream`` (both trained in place).

    Args:
        teacher, student: CTRModels sharing the feature spec.
        stream: ``D_online`` in time order (one pass, never shuffled).
        config: settings (paper defaults).
        replay: a :class:`~crossadapt.transfer.online.replay.ReplayController` over ``replay_pool`` (``D_train``).
        holdout: optional split (e.g. test) scored at the end and every ``holdout_every_windows`` windows.
        student_optimizer_state: ``OfflineDistillResult.optimizer_state`` to continue the student's Adam.
    """
    config = config or OnlineCoDistillConfig()
    distiller = build_codistiller(teacher, student, config, replay=replay, replay_pool=replay_pool,
                                  student_optimizer_state=student_optimizer_state)
    distiller.consume(stream, holdout=holdout, holdout_every_windows=holdout_every_windows)
    return distiller.finish(holdout=holdout)
