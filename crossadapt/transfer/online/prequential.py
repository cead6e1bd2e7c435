"""Prequential (test-then-train) evaluation over a time-ordered stream.

On a stream every batch is first scored and then trained on, so the predictions made BEFORE a model
learns from a batch measure it on data it has not seen, without a held-out split; this is how the online
stage and the baselines' streams are compared (paper Sec. 4). The figures are accumulated over the whole
stream and per window of ``window_batches`` batches, with wall-clock seconds (convergence curves).

The recorder is kept apart from the co-distillation loop (:mod:`crossadapt.transfer.online.codistillation`) because
it knows nothing of teachers' schedules or KD: it takes (label, student logit, teacher logit) per batch.

A before-training prediction is free when the training forward is deterministic (no dropout, no batch
norm): the student's training logits are the ones it would predict. Otherwise it needs a separate
eval-mode forward (:func:`eval_logits`); :func:`forward_is_deterministic` tells which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from crossadapt.data.batch import Batch
from crossadapt.training.evaluate import MetricDict, metrics_from_predictions

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays

__all__ = ["WindowRecord", "PrequentialRecorder", "forward_is_deterministic", "eval_logits", "check_time_order"]


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


@torch.no_grad()
def eval_logits(model: nn.Module, batch: Batch, rows: int) -> torch.Tensor:
    """``[rows]`` eval-mode logits of the first ``rows`` rows of ``batch``; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return model(batch.categorical[:rows], batch.numerical[:rows]).detach()
    finally:
        model.train(was_training)


def check_time_order(stream: "SplitArrays") -> None:
    """Raise if ``stream.timestamp`` ever goes back: test-then-train figures assume time order."""
    if stream.timestamp is None or len(stream) < 2:
        return
    ts = np.asarray(stream.timestamp)
    back = np.flatnonzero(ts[1:] < ts[:-1])
    if back.size:
        row = int(back[0]) + 1
        raise ValueError(f"the stream is not in time order: timestamp[{row}] = {ts[row]} < timestamp[{row - 1}] = "
                         f"{ts[row - 1]} ({back.size} such rows); the online split must be time-ordered")
