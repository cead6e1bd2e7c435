"""The training base class: one loop (fit / evaluate / predict) that subclasses customise through hooks.

Symbols: ``B`` batch size.

Hooks (override in a subclass, FuxiCTR style):
- :meth:`Trainer.forward` ``(batch) -> logits``: the training forward; a feature-KD trainer takes the
  representation it compares from this same forward and keeps it for :meth:`Trainer.compute_loss`;
- :meth:`Trainer.compute_loss` ``(batch, logits) -> loss``: distillation adds its KD terms here;
- :meth:`Trainer.train_step` ``(batch) -> loss``: one optimiser step (override for gradient accumulation);
- :meth:`Trainer.on_epoch_start` / :meth:`Trainer.on_epoch_end` / :meth:`Trainer.on_validation`.

Example::

    trainer = Trainer(build_model(config, spec), TrainConfig(epochs=3, patience=1))
    result = trainer.fit(dataset.split("train"), valid=dataset.split("online"))
    metrics = trainer.evaluate(dataset.split("test"))       # {"auc": ..., "logloss": ..., ...}
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from crossadapt.data.batch import Batch
from crossadapt.training.config import TrainConfig
from crossadapt.training.evaluate import MetricDict, evaluate_model, predict_proba
from crossadapt.training.optim import TrainOptimizer
from crossadapt.training.runtime import configure_threads

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite (the message gives the step)."""


class ConstantPredictorError(TrainingDivergedError):
    """Validation found the model predicting one value for every row: some layer's units all died."""


#: A validation prediction spread (std of probabilities) at or below this is a constant predictor: a dead
#: layer gives 0, or a few 1e-5 where one unit still fires for a handful of rows; a working CTR model
#: spreads its predictions by 1e-2 or more.
CONSTANT_PREDICTION_STD = 1e-4


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did. ``history`` holds one entry per validation (or per epoch without one)."""

    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    epochs_run: int = 0
    stopped_early: bool = False
    best_step: int | None = None
    best_epoch: int | None = None
    best_metrics: MetricDict = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


class _EarlyStopping:
    """Tracks the best validation score and a copy of the weights that produced it."""

    def __init__(self, config: TrainConfig):
        self.monitor, self.patience, self.min_delta = config.monitor, config.patience, config.min_delta
        self.best: float | None = None
        self.bad_validations = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, metrics: MetricDict, model: nn.Module, keep_weights: bool) -> bool:
        """Record one validation; True if it improved on the best so far."""
        score = metrics.get(self.monitor)
        if score is None:
            raise ValueError(
                f"validation {self.monitor} is undefined (single-class validation rows?); "
                "use a larger validation slice or monitor='logloss'"
            )
        sign = 1.0 if self.monitor == "auc" else -1.0  # AUC: higher is better; logloss: lower
        improved = self.best is None or sign * (score - self.best) > self.min_delta
        if improved:
            self.best, self.bad_validations = float(score), 0
            if keep_weights:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_validations += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_validations >= self.patience


class Trainer:
    """Trains a CTRModel (``forward(categorical, numerical) -> logits [B]``) with :class:`TrainConfig`.

    The optimiser (see :class:`~crossadapt.training.optim.TrainOptimizer`) is built here: sparse or dense
    embedding gradients are fixed now (``TrainConfig.sparse_embedding``); freezing and unfreezing later
    through ``requires_grad`` is fine (frozen parameters stay in the optimiser and are skipped).
    """

    def __init__(self, model: nn.Module, config: TrainConfig | None = None):
        self.config = config or TrainConfig()
        self.device = torch.device(self.config.device)
        self.num_threads = configure_threads(self.config.num_threads)
        self.model = model.to(self.device)
        if self.config.sparse_embedding is not None:
            if not hasattr(model, "set_sparse_gradients"):
                raise ValueError(f"{type(model).__name__} cannot switch to sparse embedding gradients")
            model.set_sparse_gradients(self.config.sparse_embedding)
        self.optimizer = TrainOptimizer(self.model, embedding_lr=self.config.embedding_lr, dense_lr=self.config.dense_lr)
        self.global_step = 0

    # -- hooks ---------------------------------------------------------------------------------------

    def target(self, batch: Batch) -> torch.Tensor:
        """``[B]`` float labels the task loss fits (click label or conversion label)."""
        if self.config.target == "click":
            return batch.label
        if batch.conversion is None:
            raise ValueError("TrainConfig.target is 'conversion' but the batch has no conversion column")
        return batch.conversion

    def forward(self, batch: Batch) -> torch.Tensor:
        """``[B]`` logits of the training forward (the model is already in train mode)."""
        return self.model(batch.categorical, batch.numerical)

    def compute_loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        """Scalar loss for ``logits [B]``; the base is binary cross-entropy on :meth:`target`."""
        return F.binary_cross_entropy_with_logits(logits, self.target(batch).to(logits.dtype))

    def train_step(self, batch: Batch) -> torch.Tensor:
        """Forward, loss, backward, optimiser step; returns the detached scalar loss.

        The loss stays a tensor (``float(loss)`` if you need a number): reading it forces a device
        sync, which the loop does only every ``log_every_steps``.
        """
        self.model.train()
        logits = self.forward(batch)
        loss = self.compute_loss(batch, logits)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        return loss.detach()

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch (0-based)."""

    def on_epoch_end(self, epoch: int, train_loss: float, metrics: MetricDict | None) -> None:
        """Called after each epoch with its mean training loss and the validation metrics (if any)."""

    def on_validation(self, metrics: MetricDict, improved: bool) -> None:
        """Called after every validation."""

    # -- loop ----------------------------------------------------------------------------------------

    def fit(self, train: "SplitArrays", valid: "SplitArrays | None" = None) -> FitResult:
        """Train on ``train``; with ``valid``, validate, stop early and restore the best weights."""
        from crossadapt.data import iter_batches

        if len(train) == 0:
            raise ValueError("the training split is empty")
        cfg = self.config
        torch.manual_seed(cfg.seed)  # dropout and any other torch randomness of the loop
        stopper = _EarlyStopping(cfg)
        result = FitResult()
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        started = time.perf_counter()
        stop = False
        for epoch in range(cfg.epochs):
            self.on_epoch_start(epoch)
            loss_sum = torch.zeros((), device=self.device)
            epoch_steps = 0
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show,
                       leave=False, file=sys.stderr, mininterval=0.5, unit="step")
            for batch in iter_batches(train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed + epoch):
                if self.device.type != "cpu":
                    batch = batch.to(self.device)
                loss_sum += self.train_step(batch)
                epoch_steps += 1
                result.steps += 1
                result.samples += len(batch)
                bar.update(1)
                if epoch_steps % cfg.log_every_steps == 0:
                    self._check_finite(float(loss_sum) / epoch_steps, bar)
                if cfg.eval_every_steps and valid is not None and result.steps % cfg.eval_every_steps == 0:
                    stop = self._validate(valid, stopper, result, epoch)
                    if stop:
                        break
            bar.close()
            train_loss = float(loss_sum) / max(epoch_steps, 1)
            self._check_finite(train_loss, None)
            result.epochs_run = epoch + 1
            metrics = None
            if not stop and valid is not None:
                if not (result.history and result.history[-1]["step"] == result.steps):
                    stop = self._validate(valid, stopper, result, epoch)
                result.history[-1]["train_loss"] = train_loss
                metrics = result.history[-1]["metrics"]
            elif valid is None:
                result.history.append({"epoch": epoch, "step": result.steps, "train_loss": train_loss})
            if show:
                summary = f"epoch {epoch + 1}/{cfg.epochs}: train loss {train_loss:.4f}"
                if metrics is not None:
                    summary += "".join(f", valid {k} {metrics[k]:.4f}" for k in ("auc", "logloss") if metrics.get(k) is not None)
                tqdm.write(summary, file=sys.stderr)
            self.on_epoch_end(epoch, train_loss, metrics)
            if stop:
                result.stopped_early = True
                break
        if valid is not None and cfg.restore_best and stopper.best_state is not None:
            self.model.load_state_dict(stopper.best_state)
        result.seconds = time.perf_counter() - started
        return result

    def _check_finite(self, loss: float, bar) -> None:
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"training loss is {loss} at step {self.global_step}; lower the learning rates")
        if bar is not None and not bar.disable:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def _validate(self, valid: "SplitArrays", stopper: _EarlyStopping, result: FitResult, epoch: int) -> bool:
        """Validate, record, keep the best weights; True if training should stop."""
        metrics = self.evaluate(valid)
        spread = metrics.get("prediction_std")
        if spread is not None and spread <= CONSTANT_PREDICTION_STD and len(valid) > 1:
            raise ConstantPredictorError(
                f"after {result.steps} steps the model predicts the same probability "
                f"({metrics['mean_prediction']:.4f}) for all {len(valid)} validation rows: every unit of a "
                "hidden layer is switched off (dead ReLUs). Build the model with base_rate= (see "
                "CTRModel.set_base_rate), lower dense_lr, or set batch_norm: true"
            )
        improved = stopper.update(metrics, self.model, keep_weights=self.config.restore_best)
        result.history.append({"epoch": epoch, "step": result.steps, "metrics": metrics, "improved": improved})
        if improved:
            result.best_step, result.best_epoch, result.best_metrics = result.steps, epoch, metrics
        self.on_validation(metrics, improved)
        return stopper.should_stop

    # -- inference -----------------------------------------------------------------------------------

    def predict(self, arrays: "SplitArrays") -> np.ndarray:
        """``[n]`` float32 probabilities in row order."""
        return predict_proba(self.model, arrays, self.config.eval_batch_size)

    def evaluate(self, arrays: "SplitArrays") -> MetricDict:
        """Metrics of the current model on ``arrays`` for the configured target (see ``evaluate_model``)."""
        return evaluate_model(self.model, arrays, target=self.config.target, batch_size=self.config.eval_batch_size)
