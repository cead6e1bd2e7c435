"""Paired comparisons of two methods' test AUC: over seeds (t-interval) and over test rows (bootstrap).

Two sources of noise sit in a benchmark's AUC difference: the training seed (initialisation, batch order)
and the finite test split. The seed interval is a t-interval of the per-seed deltas; the row interval is
a paired bootstrap: B resamples of the test rows with replacement, the *same* resample scoring both
methods (and every seed), so what the two share cancels. Resamples are count weights (how often each row
was drawn); the weighted AUC is computed exactly, with ties, for all B at once (no per-row Python).

Example::

    rows_a = bootstrap_aucs(labels, scores_a)        # [B], one AUC per resample
    rows_b = bootstrap_aucs(labels, scores_b)        # the same resamples (same n, resamples, seed)
    low, high = percentile_interval(rows_a - rows_b)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: Resamples of the test rows; 1000 puts the interval's ends within ~0.1 of their own width.
DEFAULT_RESAMPLES = 1000
#: Seed of the resamples: fixed, so every run on the same test split sees the same resamples (paired).
RESAMPLE_SEED = 20261205
#: Bound on one chunk's [resamples, rows] arrays (float64 entries).
_CHUNK_ENTRIES = 4_000_000


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, n]`` how many times each of ``n`` rows was drawn in each bootstrap resample."""
    drawn = rng.integers(0, n, size=(resamples, n))
    drawn += (np.arange(resamples, dtype=drawn.dtype) * n)[:, None]
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n)


def weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[B]`` AUC of ``scores`` on ``labels`` with row weights ``weights[b]`` (``[B, n]``), exact with ties:
    a positive scores 1 per lighter-scored negative and 1/2 per equally scored one, weighted by both."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], np.asarray(labels)[order] > 0
    w = np.asarray(weights, dtype=np.float64)[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # groups of tied scores
    pos = np.add.reduceat(np.where(positive, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without one class: AUC undefined (nan)
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = RESAMPLE_SEED) -> np.ndarray:
    """``[resamples]`` AUC of ``scores`` on bootstrap resamples of the rows. The resamples depend only on
    (number of rows, resamples, seed), so two calls on the same test split are paired."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    n = scores.shape[0]
    if n == 0 or labels.shape[0] != n:
        raise ValueError(f"bootstrap_aucs needs as many labels as scores (> 0), got {labels.shape[0]} and {n}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ENTRIES // n)
    out = [weighted_aucs(labels, scores, resample_counts(n, min(chunk, resamples - start), rng))
           for start in range(0, resamples, chunk)]
    return np.concatenate(out)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap statistics (nan resamples dropped)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def seed_interval(deltas: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The t-interval of the mean of paired per-seed deltas; None for a single seed (no spread to measure)."""
    values = np.asarray(deltas, dtype=np.float64)
    if values.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2.0, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    mean = float(values.mean())
    return mean - half, mean + half
