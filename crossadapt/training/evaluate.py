"""Batched prediction and the standard evaluation dictionary of a CTR/CVR model.

Symbols: ``n`` rows of a split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from crossadapt import metrics as M
from crossadapt.training.config import Target

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays

MetricDict = dict[str, float | int | None]


def select_target_rows(arrays: "SplitArrays", target: Target) -> "SplitArrays":
    """The rows a target is defined on: all rows for clicks, clicked rows only for conversions."""
    if target == "click":
        return arrays
    return arrays.take(target_row_ids(arrays, target))


def target_row_ids(arrays: SplitArrays, target: Target) -> np.ndarray:
    """Indices (ascending) of the rows :func:`select_target_rows` keeps."""
    if target == "click":
        return np.arange(len(arrays))
    if arrays.conversion is None:
        raise ValueError("target 'conversion' needs a conversion column, and this split has none")
    return np.flatnonzero(np.asarray(arrays.label) > 0.5)


def positive_rate(arrays: "SplitArrays", target: Target = "click") -> float | None:
    """The mean label of ``target`` over ``arrays`` (the rows a model will be trained on), or None
    where it cannot seed a logit (no rows, or a single class)."""
    rows = select_target_rows(arrays, target)
    if len(rows) == 0:
        return None
    rate = float(np.mean(target_labels(rows, target), dtype=np.float64))
    return rate if 0.0 < rate < 1.0 else None


def target_labels(arrays: "SplitArrays", target: Target) -> np.ndarray:
    """``[n]`` labels of ``target`` (the caller has already applied :func:`select_target_rows`)."""
    column = arrays.label if target == "click" else arrays.conversion
    if column is None:
        raise ValueError(f"this split has no {target} column")
    return np.asarray(column)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, arrays: "SplitArrays", batch_size: int = 65536) -> np.ndarray:
    """``[n]`` float32 logits of ``model`` over ``arrays`` in row order (eval mode, no autograd)."""
    from crossadapt.data import iter_batches

    device = _model_device(model)
    out = np.empty(len(arrays), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        start = 0
        for batch in iter_batches(arrays, batch_size):
            logits = model(batch.categorical.to(device), batch.numerical.to(device))
            stop = start + logits.shape[0]
            out[start:stop] = logits.float().cpu().numpy()
            start = stop
    finally:
        model.train(was_training)
    if start != out.shape[0]:
        raise RuntimeError(f"iter_batches yielded {start} rows for a split of {out.shape[0]}")
    return out


def predict_proba(model: nn.Module, arrays: "SplitArrays", batch_size: int = 65536) -> np.ndarray:
    """``[n]`` float32 probabilities (sigmoid of :func:`predict_logits`)."""
    logits = predict_logits(model, arrays, batch_size)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def _defined(fn, *args) -> float | None:
    """A metric's value, or None where it is undefined on this data (e.g. AUC with one class)."""
    try:
        return fn(*args)
    except M.MetricError:
        return None


def metrics_from_predictions(
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    users: np.ndarray | None = None,
    true_probabilities: np.ndarray | None = None,
) -> MetricDict:
    """The evaluation dictionary from ready predictions.

    Keys: ``rows``, ``auc``, ``logloss``, ``pcoc``, ``positive_rate``, ``mean_prediction``,
    ``prediction_std`` (0 for a constant predictor),
    ``gauc`` (if ``users``), ``oracle_auc`` and ``oracle_logloss`` (if ``true_probabilities``: what
    the generating probabilities themselves score, the ceiling on synthetic data).
    Undefined values (one class only, no positives) are None.
    """
    y = np.asarray(labels)
    p = np.asarray(probabilities)
    out: MetricDict = {
        "rows": int(y.shape[0]),
        "auc": _defined(M.auc, y, p),
        "logloss": M.logloss(y, p),
        "pcoc": _defined(M.pcoc, y, p),
        "positive_rate": float(np.mean(y, dtype=np.float64)),
        "mean_prediction": float(np.mean(p, dtype=np.float64)),
        "prediction_std": float(np.std(p, dtype=np.float64)),
    }
    if users is not None:
        out["gauc"] = _defined(M.gauc, y, p, users)
    if true_probabilities is not None:
        out["oracle_auc"] = _defined(M.auc, y, true_probabilities)
        out["oracle_logloss"] = M.logloss(y, true_probabilities)
    return out


def evaluate_model(
    model: nn.Module, arrays: "SplitArrays", *, target: Target = "click", batch_size: int = 65536
) -> MetricDict:
    """Evaluate ``model`` on a split: see :func:`metrics_from_predictions` for the keys.

    For ``target="conversion"`` only clicked rows are scored (and ``oracle_*`` is omitted: the
    synthetic ``prob`` column is a click probability).
    """
    rows = select_target_rows(arrays, target)
    if len(rows) == 0:
        raise ValueError(f"no rows to evaluate the {target} target on")
    probabilities = predict_proba(model, rows, batch_size)
    true_p = rows.prob if target == "click" else None
    return metrics_from_predictions(
        target_labels(rows, target),
        probabilities,
        users=None if rows.user is None else np.asarray(rows.user),
        true_probabilities=None if true_p is None else np.asarray(true_p),
    )
