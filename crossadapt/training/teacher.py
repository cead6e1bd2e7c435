"""Train the production (teacher) model the way the paper's baseline is trained: on hist + train.

Validation is the latest ``validation_fraction`` of the train split (splits are time-ordered), so early
stopping judges the model on the period right before the one it will serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from crossadapt.training.config import TrainConfig
from crossadapt.training.evaluate import MetricDict, positive_rate, select_target_rows
from crossadapt.training.runtime import seed_everything
from crossadapt.training.trainer import FitResult, Trainer

if TYPE_CHECKING:
    from crossadapt.data import PreparedDataset, SplitArrays


@dataclass
class TeacherResult:
    """The trained model, its validation metrics (best weights) and the fit record."""

    model: nn.Module
    metrics: MetricDict
    fit: FitResult
    train_rows: int
    valid_rows: int


def teacher_training_rows(
    dataset: "PreparedDataset", validation_fraction: float
) -> tuple["SplitArrays", "SplitArrays | None"]:
    """``(fit rows, validation rows)``: hist + the head of train, and the tail of train (None if 0 rows)."""
    from crossadapt.data import SplitArrays

    available = set(dataset.manifest.splits)
    if "train" not in available:
        raise ValueError(f"dataset has no 'train' split (it has {sorted(available)})")
    train = dataset.split("train")
    n_valid = int(round(len(train) * validation_fraction))
    head = train.slice(0, len(train) - n_valid)
    parts = [dataset.split("hist")] if "hist" in available and dataset.manifest.splits["hist"] > 0 else []
    fit_rows = SplitArrays.concat(parts + [head]) if parts else head
    valid = train.slice(len(train) - n_valid, len(train)) if n_valid > 0 else None
    return fit_rows, valid


def train_teacher(
    dataset: "PreparedDataset",
    model_config: Any,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
) -> TeacherResult:
    """Build ``model_config`` (a ModelConfig or its dict) for the dataset and train it on hist + train.

    With ``target="conversion"`` only clicked rows are used (conversion is observed only after a click).
    The returned metrics are those of the restored best weights on the validation slice (empty
    without one).
    """
    from crossadapt.models import build_model, parse_model_config

    config = train_config if isinstance(train_config, TrainConfig) else TrainConfig.model_validate(train_config or {})
    if isinstance(model_config, Mapping):
        model_config = parse_model_config(dict(model_config))
    fit_rows, valid = teacher_training_rows(dataset, config.validation_fraction)
    fit_rows = select_target_rows(fit_rows, config.target)
    if valid is not None:
        valid = select_target_rows(valid, config.target)
        valid = valid if len(valid) else None  # e.g. no clicked row in a tiny slice: train without early stopping
    seed_everything(config.seed)  # model initialisation is part of what the seed reproduces
    model = build_model(model_config, dataset.feature_spec, base_rate=positive_rate(fit_rows, config.target))
    trainer = Trainer(model, config)
    fit = trainer.fit(fit_rows, valid)
    if valid is None:
        metrics = {}
    elif config.restore_best and fit.best_metrics:
        metrics = fit.best_metrics  # the restored weights are the ones these metrics were measured on
    else:
        metrics = trainer.evaluate(valid)
    return TeacherResult(
        model=trainer.model, metrics=metrics, fit=fit, train_rows=len(fit_rows), valid_rows=0 if valid is None else len(valid)
    )
