"""Paired Poisson bootstrap of student − teacher differences on the same labelled rows.

Each replicate reweights every row by an independent Poisson(1) count (the streaming form of
resampling with replacement), so all replicates of a statistic are one matrix product or one
sorted pass over ``[R, n]`` weights — no loop over rows or replicates (replicates go in chunks to
bound memory). Both arms see the same weights in a replicate: the pairing cancels the variance the
two arms share (hard rows are hard for both), which is what makes a small delta detectable.

Symbols: ``n`` rows, ``R`` replicates, ``G`` distinct score values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossadapt.metrics import LOGLOSS_EPS, MetricError, auc, logloss, pcoc

_CHUNK_CELLS = 1 << 22  # replicates × rows per chunk: ~32 MB of float64 weights


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float
    level: float


def weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[R]`` ROC AUC of scores ``p [n]`` against 0/1 labels ``y [n]`` under each row of ``weights [R, n]``.

    Ties count one half (the Mann-Whitney convention). A replicate without weight on both classes
    gives NaN.
    """
    order = np.argsort(p, kind="stable")
    sorted_p, sorted_y = p[order], y[order].astype(np.float64)
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])  # first row of each tie group
    positive = np.add.reduceat(w * sorted_y, starts, axis=1)  # [R, G]
    negative = np.add.reduceat(w * (1.0 - sorted_y), starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative  # negatives with a strictly lower score
    numerator = (positive * (below + 0.5 * negative)).sum(axis=1)
    denominator = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def weighted_logloss(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[R]`` mean cross-entropy under each weight row (p clipped as crossadapt.metrics.logloss clips it)."""
    clipped = np.clip(p.astype(np.float64), LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
    losses = -(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped))
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ losses / total, np.nan)


def weighted_pcoc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[R]`` predicted over observed clicks under each weight row."""
    observed = weights @ y.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(observed > 0, weights @ p.astype(np.float64) / observed, np.nan)


def _point(metric, y: np.ndarray, p: np.ndarray) -> float:  # noqa: ANN001 - a crossadapt.metrics function
    try:
        return metric(y, p)
    except MetricError:
        return float("nan")


@dataclass(frozen=True)
class PairedIntervals:
    rows: int
    delta_auc: Interval
    delta_logloss: Interval
    student_pcoc: Interval
    teacher_pcoc: Interval


def _interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    finite = replicates[np.isfinite(replicates)]
    if not np.isfinite(estimate) or len(finite) < 2:
        return Interval(estimate, float("nan"), float("nan"), level)
    tail = (1.0 - level) / 2.0
    lower, upper = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(estimate, float(lower), float(upper), level)


def paired_bootstrap(y: np.ndarray, teacher: np.ndarray, student: np.ndarray, *, replicates: int, level: float,
                     rng: np.random.Generator, max_rows: int | None = None) -> PairedIntervals:
    """Percentile intervals of ΔAUC, ΔLogLoss (student − teacher) and each arm's PCOC on paired rows.

    Args:
        y: ``[n]`` 0/1 labels; teacher, student: ``[n]`` probabilities of the same rows.
        max_rows: resample a uniform subsample of this many rows at most (a wider, still valid interval).
    """
    y = np.asarray(y, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    student = np.asarray(student, dtype=np.float64)
    estimates = {
        "delta_auc": _point(auc, y, student) - _point(auc, y, teacher),
        "delta_logloss": _point(logloss, y, student) - _point(logloss, y, teacher),
        "student_pcoc": _point(pcoc, y, student),
        "teacher_pcoc": _point(pcoc, y, teacher),
    }
    sample = np.arange(len(y))
    if max_rows is not None and len(y) > max_rows:
        sample = np.sort(rng.choice(len(y), size=max_rows, replace=False))
    ys, ts, ss = y[sample], teacher[sample], student[sample]
    draws: dict[str, list[np.ndarray]] = {name: [] for name in estimates}
    chunk = max(1, _CHUNK_CELLS // max(len(ys), 1))
    for start in range(0, replicates if len(ys) >= 2 else 0, chunk):  # chunks of replicates, not rows
        weights = rng.poisson(1.0, size=(min(chunk, replicates - start), len(ys))).astype(np.float64)
        draws["delta_auc"].append(weighted_auc(ys, ss, weights) - weighted_auc(ys, ts, weights))
        draws["delta_logloss"].append(weighted_logloss(ys, ss, weights) - weighted_logloss(ys, ts, weights))
        draws["student_pcoc"].append(weighted_pcoc(ys, ss, weights))
        draws["teacher_pcoc"].append(weighted_pcoc(ys, ts, weights))
    intervals = {name: _interval(estimates[name], np.concatenate(draws[name]) if draws[name] else np.zeros(0), level)
                 for name in estimates}
    return PairedIntervals(rows=len(y), **intervals)
