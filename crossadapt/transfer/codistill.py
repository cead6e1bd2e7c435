"""Online asymmetric co-distillation over the stream (paper Sec. 3.2, Eq. 10-12 and 15, Algorithm 1 l. 36-50).

For each stream batch ``B_t`` (time order, never shuffled; ``t = 1, 2, ...``):

1. ``B_aug = B_t ∪ Ψ(D_train, r_enh · |B_t|)``: replayed training rows appended AFTER the stream rows;
2. the teacher (eval mode) scores ``B_aug``; these logits are the KD targets and, with co-evolution, the
   teacher's ``BCE`` on ``B_aug`` is back-propagated into its ``.grad`` (autograd sums: Eq. 11);
3. the student takes one step on ``BCE + λ · KD`` over ``B_aug`` (Eq. 10);
4. if ``t mod τ = 0`` the teacher steps on the accumulated gradient and clears it (Eq. 12), first at ``t = τ``.

Prequential figures: the predictions of both models on ``B_t`` are taken BEFORE either trains on it (the
student's from its training forward when that forward is deterministic, i.e. no dropout or batch norm,
else from a separate eval-mode forward; the teacher's are the logits of step 2). They are accumulated
over the stream and per window of ``window_batches`` batches, with wall-clock seconds.

API: :func:`codistill_online` runs one stream; :class:`CoDistiller` is the same loop for a stream that
arrives in chunks (:meth:`CoDistiller.consume` per chunk, :meth:`CoDistiller.finish` once) and for the KD
baselines' offline epochs (:meth:`CoDistiller.train_epochs`).

Choices:
- Teacher optimiser: ``"adam"`` (default; the paper trains every model with Adam, lr 0.1 embeddings /
  1e-3 network, so Eq. 12 is read as one optimiser step on the accumulated gradient; Adam is invariant to
  the gradient's scale, so summing vs averaging over τ does not matter) or ``"sgd"``: exactly
  ``θ ← θ − η_T · g`` with ``g`` the SUM of the τ per-step gradients.
- The teacher runs in eval mode: KD targets are its inference predictions, and between its steps the
  teacher is bit-for-bit unchanged (parameters and buffers, e.g. batch-norm statistics).
- Partial window at the end (``t_end mod τ ≠ 0``): ``partial_window="drop"`` (default) discards the
  pending gradient of the last ``t_end mod τ`` batches, as Algorithm 1 does (the loop simply ends), so the
  teacher only ever changes at ``t = τ, 2τ, ...``; ``"flush"`` applies it as one final teacher step. The
  result reports which and how many batches it covered.
- Ablations: ``co_evolution=False`` freezes the teacher (no gradient at all); ``asymmetric=False`` steps the
  teacher every batch (τ = 1); ``distillation=False`` sets λ = 0 (the teacher still predicts and learns).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from crossadapt.data.batch import Batch
from crossadapt.training import TrainConfig
from crossadapt.training.evaluate import MetricDict, evaluate_model, metrics_from_predictions
from crossadapt.training.optim import TrainOptimizer, split_parameters
from crossadapt.transfer.adaptive import AdaptiveKDConfig, AdaptiveKDController
from crossadapt.transfer.distill import DistillationTrainer

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


class OnlineCoDistillConfig(BaseModel):
    """Co-distillation settings (paper defaults: τ = 10, λ = 0.7, T = 4, Adam 0.1 / 1e-3, batch 4096)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    batch_size: int = Field(4096, ge=1, description="|B_t|: stream rows per step (replay rows come on top).")
    kd_weight: float = Field(0.7, alias="lambda", ge=0.0)
    temperature: float = Field(4.0, gt=0.0)
    scale_kd_by_t2: bool = True
    teacher_update_interval: int = Field(10, ge=1, description="τ: teacher steps at t = τ, 2τ, ...")
    co_evolution: bool = Field(True, description="False: the teacher is frozen (ablation).")
    asymmetric: bool = Field(True, description="False: the teacher steps every batch, τ = 1 (ablation).")
    distillation: bool = Field(True, description="False: λ = 0 (ablation).")
    teacher_optimizer: Literal["adam", "sgd"] = "adam"
    teacher_embedding_lr: float = Field(0.1, gt=0.0, description="η_T for the teacher's embedding tables.")
    teacher_dense_lr: float = Field(1e-3, gt=0.0, description="η_T for the rest of the teacher.")
    embedding_lr: float = Field(0.1, gt=0.0, description="Student embedding lr.")
    dense_lr: float = Field(1e-3, gt=0.0, description="Student interaction-network lr.")
    partial_window: Literal["drop", "flush"] = Field("drop", description="What to do with < τ pending batches.")
    window_batches: int = Field(10, ge=1, description="Batches per prequential window record.")
    seed: int = Field(0, description="Seeds dropout; the replay draws are seeded by the ReplayController.")
    device: str = "cpu"
    num_threads: int | None = Field(None, ge=1)
    adaptive: AdaptiveKDConfig | None = Field(None, description="Gap-driven λ and replay share; None = fixed.")

    @property
    def effective_interval(self) -> int:
        return self.teacher_update_interval if self.asymmetric else 1

    @property
    def effective_kd_weight(self) -> float:
        return self.kd_weight if self.distillation else 0.0

    def student_train_config(self) -> TrainConfig:
        return TrainConfig(batch_size=self.batch_size, embedding_lr=self.embedding_lr, dense_lr=self.dense_lr,
                           seed=self.seed, progress=False, num_threads=self.num_threads, device=self.device,
                           patience=None, restore_best=False)


class AsymmetricTeacher:
    """The teacher side of Eq. 11-12: accumulate BCE gradients every batch, step every ``interval`` batches.

    Args:
        model: the teacher CTRModel (updated in place unless ``trainable=False``).
        interval: τ.
        optimizer: ``"adam"`` (Adam/SparseAdam at the two lrs) or ``"sgd"`` (plain ``θ − η g``).
        trainable: False freezes the teacher: its forward runs without autograd and nothing accumulates.
    """

    def __init__(self, model: nn.Module, *, interval: int, optimizer: Literal["adam", "sgd"],
                 embedding_lr: float, dense_lr: float, trainable: bool = True):
        self.model = model
        self.interval = interval
        self.trainable = trainable
        self.pending = 0  # batches accumulated since the last step
        self.update_steps: list[int] = []  # values of t at which the teacher stepped
        self.optimizer: Any = None
        if trainable:
            self.optimizer = (TrainOptimizer(model, embedding_lr=embedding_lr, dense_lr=dense_lr)
                              if optimizer == "adam" else _sgd(model, embedding_lr, dense_lr))
            self.optimizer.zero_grad()

    def logits_and_features(
        self, batch: Batch, features: Literal["embedding", "hidden"] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B]`` teacher logits in eval mode (autograd iff trainable) and, from the same forward, the
        detached field embeddings ``[B, F, D_T]`` or penultimate representation ``[B, H_T]`` if asked."""
        self.model.eval()
        with torch.set_grad_enabled(self.trainable):
            if features == "hidden":
                logits, hidden = self.model.forward_with_representation(batch.categorical, batch.numerical)
                return logits, hidden.detach()
            if features == "embedding":
                captured: list[torch.Tensor] = []
                handle = self.model.embedding.register_forward_hook(lambda m, i, out: captured.append(out))
                try:
                    logits = self.model(batch.categorical, batch.numerical)
                finally:
                    handle.remove()
                return logits, captured[0].detach()
            return self.model(batch.categorical, batch.numerical), None

    def accumulate(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add ``∇ BCE(logits, labels)`` to the pending gradient (Eq. 11)."""
        if not self.trainable:
            return
        F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)).backward()
        self.pending += 1

    def maybe_step(self, t: int) -> bool:
        """Eq. 12: step and clear the gradient iff ``t mod τ = 0``; True if it stepped."""
        if self.trainable and self.pending and t % self.interval == 0:
            return self._step(t)
        return False

    def finish(self, t: int, policy: Literal["drop", "flush"]) -> bool:
        """End of stream: flush (step) or drop the partial window; True if it stepped."""
        if not self.trainable or self.pending == 0:
            return False
        if policy == "flush":
            return self._step(t)
        self.optimizer.zero_grad()
        self.pending = 0
        return False

    def _step(self, t: int) -> bool:
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.pending = 0
        self.update_steps.append(t)
        return True


def _sgd(model: nn.Module, embedding_lr: float, dense_lr: float) -> torch.optim.SGD:
    """Plain ``θ ← θ − η g`` with an embedding lr and a dense lr (SGD accepts sparse gradients)."""
    sparse, dense_embedding, dense = split_parameters(model)
    groups = [{"params": sparse + dense_embedding, "lr": embedding_lr}, {"params": dense, "lr": dense_lr}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=dense_lr)


def forward_is_deterministic(model: nn.Module) -> bool:
    """True if train-mode and eval-mode forwards agree (no active dropout, no batch norm)."""
    config = getattr(model, "config", None)
    if config is not None and (getattr(config, "dropout", 0) or getattr(config, "batch_norm", False)):
        return False
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return False
    return True


@dataclass
class WindowRecord:
    """Prequential figures of one window of stream batches (``seconds``: loop time since the start)."""

    window: int
    first_batch: int
    last_batch: int
    rows: int
    seconds: float
    student_auc: float | None
    student_logloss: float
    teacher_auc: float | None
    teacher_logloss: float
    teacher_updates: int
    kd_weight: float
    replay_ratio: float
    holdout: MetricDict | None = None


class PrequentialRecorder:
    """Collects (label, student logit, teacher logit) of every stream row in order and per window.

    Logits stay on the device inside a window (no sync per batch) and move to the host at window ends.
    """

    def __init__(self, window_batches: int):
        self.window_batches = window_batches
        self.windows: list[WindowRecord] = []
        self._parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self._done: list[np.ndarray] = []  # [3, n_window] float32 blocks (label, student, teacher)
        self._first_batch = 1

    def add(self, labels: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None) -> None:
        self._parts.append((labels.detach(), student_logits.detach(), None if teacher_logits is None
                            else teacher_logits.detach()))

    @property
    def pending_batches(self) -> int:
        return len(self._parts)

    def close_window(self, last_batch: int, seconds: float, **extra: Any) -> WindowRecord | None:
        if not self._parts:
            return None
        labels = torch.cat([p[0] for p in self._parts]).float().cpu().numpy()
        student = torch.cat([p[1] for p in self._parts]).float().cpu().numpy()
        has_teacher = all(p[2] is not None for p in self._parts)
        teacher = torch.cat([p[2] for p in self._parts]).float().cpu().numpy() if has_teacher else None
        self._parts = []
        self._done.append(np.stack([labels, student, student if teacher is None else teacher]))
        s = _scores(labels, student)
        t = _scores(labels, teacher) if teacher is not None else {"auc": None, "logloss": float("nan")}
        record = WindowRecord(window=len(self.windows), first_batch=self._first_batch, last_batch=last_batch,
                              rows=int(labels.shape[0]), seconds=seconds, student_auc=s["auc"],
                              student_logloss=s["logloss"], teacher_auc=t["auc"], teacher_logloss=t["logloss"],
                              **extra)
        self.windows.append(record)
        self._first_batch = last_batch + 1
        return record

    def totals(self) -> tuple[MetricDict, MetricDict]:
        """Prequential metrics over every recorded row: (student, teacher)."""
        if not self._done:
            return {}, {}
        allrows = np.concatenate(self._done, axis=1)
        return _scores(allrows[0], allrows[1]), _scores(allrows[0], allrows[2])

    def logits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``[n]`` labels, student logits, teacher logits of every closed window, in stream order."""
        if not self._done:
            empty = np.zeros(0, np.float32)
            return empty, empty, empty
        allrows = np.concatenate(self._done, axis=1)
        return allrows[0], allrows[1], allrows[2]


def _scores(labels: np.ndarray, logits: np.ndarray) -> MetricDict:
    probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return metrics_from_predictions(labels, probabilities)


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
        student_before = None
        if record and not self.deterministic:
            student_before = _eval_logits(self.trainer.model, aug, n)
        self.trainer.train_step(aug)
        if record:
            student_before = student_before if student_before is not None else self.trainer.last_logits[:n]
            self.recorder.add(labels[:n], student_before, None if teacher_logits is None else teacher_logits[:n])
        if self.teacher is not None:
            self.teacher.accumulate(teacher_logits, labels)
            self.teacher.maybe_step(t)
        if record and self.controller is not None:
            self._adapt(labels[:n], student_before, teacher_logits[:n].detach())
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
        _check_time_order(stream)
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
        )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _eval_logits(model: nn.Module, batch: Batch, rows: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(batch.categorical[:rows], batch.numerical[:rows]).detach()
    finally:
        model.train(was_training)


def _check_time_order(stream: "SplitArrays") -> None:
    if stream.timestamp is None or len(stream) < 2:
        return
    ts = np.asarray(stream.timestamp)
    back = np.flatnonzero(ts[1:] < ts[:-1])
    if back.size:
        row = int(back[0]) + 1
        raise ValueError(f"the stream is not in time order: timestamp[{row}] = {ts[row]} < timestamp[{row - 1}] = "
                         f"{ts[row - 1]} ({back.size} such rows); the online split must be time-ordered")


def build_codistiller(teacher: nn.Module, student: nn.Module, config: OnlineCoDistillConfig, *,
                      replay: Any = None, replay_pool: "SplitArrays | None" = None,
                      student_optimizer_state: list[dict] | None = None) -> CoDistiller:
    """The CrossAdapt online stage wired from a config (both models move to ``config.device``)."""
    trainer = DistillationTrainer(student, config.student_train_config(), kd_weight=config.effective_kd_weight,
                                  temperature=config.temperature, scale_kd_by_t2=config.scale_kd_by_t2)
    if student_optimizer_state is not None:
        trainer.optimizer.load_state_dict(student_optimizer_state)
    torch.manual_seed(config.seed)  # dropout of the student's training forwards
    asym = AsymmetricTeacher(teacher.to(trainer.device), interval=config.effective_interval,
                             optimizer=config.teacher_optimizer, embedding_lr=config.teacher_embedding_lr,
                             dense_lr=config.teacher_dense_lr, trainable=config.co_evolution)
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
        replay: a :class:`~crossadapt.transfer.replay.ReplayController` over ``replay_pool`` (``D_train``).
        holdout: optional split (e.g. test) scored at the end and every ``holdout_every_windows`` windows.
        student_optimizer_state: ``OfflineDistillResult.optimizer_state`` to continue the student's Adam.
    """
    config = config or OnlineCoDistillConfig()
    distiller = build_codistiller(teacher, student, config, replay=replay, replay_pool=replay_pool,
                                  student_optimizer_state=student_optimizer_state)
    distiller.consume(stream, holdout=holdout, holdout_every_windows=holdout_every_windows)
    return distiller.finish(holdout=holdout)
