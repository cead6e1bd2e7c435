"""Per-arm figures and paired deltas over a window of kept rows (pure functions of a copy).

An arm's rows are those it scored with its current checkpoint (served or shadow): a row scored by
a checkpoint swapped out since never counts for the new one. Paired rows are labelled rows both
current arms scored; the deltas and PCOC intervals are measured on exactly those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossadapt.metrics import MetricError, auc, logloss, pcoc
from services.predictor.arms import ARM_NAMES, STUDENT, TEACHER
from services.predictor.bootstrap import PairedIntervals, paired_bootstrap
from services.predictor.score_log import ARM_COLUMN, KeptRows

NAN = float("nan")


@dataclass(frozen=True)
class ArmFigures:
    arm: int
    checkpoint: str  # name/version
    served_rows: int
    scored_rows: int
    labelled_rows: int
    auc: float
    logloss: float
    pcoc: float
    unknown_values: int

    @property
    def name(self) -> str:
        return ARM_NAMES[self.arm]


@dataclass(frozen=True)
class WindowFigures:
    window_start: float  # unix seconds
    teacher: ArmFigures
    student: ArmFigures
    paired: PairedIntervals


def _metric(function, y: np.ndarray, p: np.ndarray) -> float:  # noqa: ANN001 - a crossadapt.metrics function
    if not len(y):
        return NAN
    try:
        return function(y, p)
    except MetricError:  # e.g. AUC with one class: undefined, not an error of the server
        return NAN


def scored_by(rows: KeptRows, arm: int, generation: int) -> np.ndarray:
    """``[n]`` bool: rows the arm's current checkpoint scored."""
    column = ARM_COLUMN[arm]
    return np.isfinite(rows.score[:, column]) & (rows.generation[:, column] == generation)


def arm_figures(rows: KeptRows, arm: int, generation: int, checkpoint: str) -> ArmFigures:
    column = ARM_COLUMN[arm]
    scored = scored_by(rows, arm, generation)
    labelled = scored & np.isfinite(rows.label)
    y, p = rows.label[labelled].astype(np.float64), rows.score[labelled, column].astype(np.float64)
    return ArmFigures(
        arm=arm, checkpoint=checkpoint, served_rows=int((scored & (rows.served == arm)).sum()),
        scored_rows=int(scored.sum()), labelled_rows=int(labelled.sum()), auc=_metric(auc, y, p),
        logloss=_metric(logloss, y, p), pcoc=_metric(pcoc, y, p), unknown_values=int(rows.unknown[scored, column].sum()),
    )


def window_figures(rows: KeptRows, *, window_start: float, generations: dict[int, int], checkpoints: dict[int, str],
                   replicates: int, level: float, max_rows: int, seed: int) -> WindowFigures:
    """Both arms' figures and the paired bootstrap intervals of the rows in `rows`."""
    teacher = arm_figures(rows, TEACHER, generations[TEACHER], checkpoints[TEACHER])
    student = arm_figures(rows, STUDENT, generations[STUDENT], checkpoints[STUDENT])
    paired = (scored_by(rows, TEACHER, generations[TEACHER]) & scored_by(rows, STUDENT, generations[STUDENT])
              & np.isfinite(rows.label))
    y = rows.label[paired]
    intervals = paired_bootstrap(y, rows.score[paired, 0], rows.score[paired, 1], replicates=replicates, level=level,
                                 rng=np.random.default_rng(seed), max_rows=max_rows)
    return WindowFigures(window_start=window_start, teacher=teacher, student=student, paired=intervals)
