"""Training: the Trainer base (fit / evaluate / predict with hooks), the paper's optimiser,
teacher training and the evaluation dictionary."""

from typing import TYPE_CHECKING

from crossadapt.lazy import lazy_members

if TYPE_CHECKING:
    from crossadapt.training.config import Target, TrainConfig
    from crossadapt.training.evaluate import (
        MetricDict,
        evaluate_model,
        metrics_from_predictions,
        predict_logits,
        positive_rate,
        predict_proba,
        select_target_rows,
        target_labels,
        target_row_ids,
    )
    from crossadapt.training.optim import TrainOptimizer, preload_optimizer_runtime, split_parameters
    from crossadapt.training.runtime import available_cpus, configure_threads, seed_everything
    from crossadapt.training.teacher import TeacherResult, teacher_training_rows, train_teacher
    from crossadapt.training.trainer import ConstantPredictorError, FitResult, Trainer, TrainingDivergedError

_HOMES = {
    **dict.fromkeys(('Target', 'TrainConfig'), 'config'),
    **dict.fromkeys(('MetricDict', 'evaluate_model', 'metrics_from_predictions', 'predict_logits', 'positive_rate', 'predict_proba', 'select_target_rows', 'target_labels', 'target_row_ids'), 'evaluate'),
    **dict.fromkeys(('TrainOptimizer', 'preload_optimizer_runtime', 'split_parameters'), 'optim'),
    **dict.fromkeys(('available_cpus', 'configure_threads', 'seed_everything'), 'runtime'),
    **dict.fromkeys(('TeacherResult', 'teacher_training_rows', 'train_teacher'), 'teacher'),
    **dict.fromkeys(('ConstantPredictorError', 'FitResult', 'Trainer', 'TrainingDivergedError'), 'trainer'),
}
__getattr__ = lazy_members(__name__, _HOMES, globals())

__all__ = [
    "ConstantPredictorError",
    "FitResult",
    "MetricDict",
    "Target",
    "TeacherResult",
    "TrainConfig",
    "TrainOptimizer",
    "Trainer",
    "TrainingDivergedError",
    "available_cpus",
    "configure_threads",
    "evaluate_model",
    "metrics_from_predictions",
    "positive_rate",
    "predict_logits",
    "predict_proba",
    "seed_everything",
    "select_target_rows",
    "preload_optimizer_runtime",
    "split_parameters",
    "target_labels",
    "target_row_ids",
    "teacher_training_rows",
    "train_teacher",
]
