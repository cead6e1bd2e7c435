"""Offline metrics for CTR/CVR models: ranking (AUC, GAUC), loss, calibration and agreement.

All functions take 1-d numpy-compatible arrays (``n`` rows) and return a Python ``float``.
They are vectorised (one sort, no Python loop over rows or groups), so they run on tens of
millions of rows. Bad input (NaN/inf, shape mismatch, empty arrays, a single class where two are
needed) raises :class:`MetricError`, a ``ValueError``, with a message naming the argument.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 1, 1, 0]); p = np.array([0.1, 0.8, 0.4, 0.4])
    >>> auc(y, p)  # one tie between a positive and a negative counts 1/2
    0.875
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "log_odds",
    "MetricError",
    "auc",
    "logloss",
    "gauc",
    "pcoc",
    "pcvr_bias",
    "spearman",
    "ndcg_at_k",
    "group_means",
    "average_ranks",
]

LOGLOSS_EPS = 1e-7  # clip to [eps, 1-eps]: float32 probabilities of exactly 0/1 must not give inf


class MetricError(ValueError):
    """A metric got input it cannot be computed on (the message says which argument and why)."""


def _vector(name: str, values, *, finite: bool = True) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise MetricError(f"{name} must be 1-d, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricError(f"{name} is empty")
    if finite and arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise MetricError(
                f"{name} has {int(bad.sum())} NaN/inf value(s) (first at index {first}: {arr[first]})"
            )
    return arr


def _pair(y, p, y_name: str = "y", p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    ya, pa = _vector(y_name, y), _vector(p_name, p)
    if ya.shape != pa.shape:
        raise MetricError(f"{y_name} has shape {ya.shape} but {p_name} has shape {pa.shape}")
    return ya, pa


def _binary(name: str, y: np.ndarray) -> np.ndarray:
    """Labels as bool; anything but 0/1 is an error (AUC needs hard labels)."""
    if y.dtype == bool:
        return y
    is_one, is_zero = y == 1, y == 0
    if not np.all(is_one | is_zero):
        first = int(np.flatnonzero(~(is_one | is_zero))[0])
        raise MetricError(f"{name} must hold only 0/1 labels, found {y[first]!r} at index {first}")
    return is_one


def _tie_blocks(sorted_values: np.ndarray, extra_breaks: np.ndarray | None = None) -> np.ndarray:
    """Start index of every run of equal values in a sorted array (plus forced breaks)."""
    change = np.empty(sorted_values.shape[0], dtype=bool)
    change[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
    if extra_breaks is not None:
        change |= extra_breaks
    return np.flatnonzero(change)


def _block_average_positions(starts: np.ndarray, n: int) -> np.ndarray:
    """For each sorted position, the mean 1-based position of its tie block (an average rank)."""
    ends = np.append(starts[1:], n)  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end)
    return np.repeat(mean_rank, ends - starts)


def average_ranks(values) -> np.ndarray:
    """1-based ranks with ties given their average rank (like ``scipy.stats.rankdata``). ``[n] -> [n]``."""
    v = _vector("values", values)
    order = np.argsort(v, kind="stable")
    ranks_sorted = _block_average_positions(_tie_blocks(v[order]), v.shape[0])
    ranks = np.empty(v.shape[0], dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def auc(y, p) -> float:
    """ROC AUC by the Mann-Whitney U statistic on average ranks (exact with ties), O(n log n).

    Args:
        y: ``[n]`` 0/1 labels (both classes must be present).
        p: ``[n]`` scores (probabilities or logits; only their order matters).
    """
    ya, pa = _pair(y, p)
    pos = _binary("y", ya)
    n_pos = int(pos.sum())
    n_neg = pos.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricError(
            f"AUC is undefined: y has only one class ({'1' if n_neg == 0 else '0'}) over {pos.shape[0]} rows"
        )
    rank_sum = average_ranks(pa)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y, p, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (clipped to ``[eps, 1-eps]``) against ``y`` in [0, 1]."""
    ya, pa = _pair(y, p)
    ya = ya.astype(np.float64)
    if ya.min() < 0 or ya.max() > 1:
        raise MetricError(f"y must lie in [0, 1], got range [{ya.min()}, {ya.max()}]")
    pa = np.clip(pa.astype(np.float64), eps, 1.0 - eps)
    return float(-np.mean(ya * np.log(pa) + (1.0 - ya) * np.log1p(-pa)))


def gauc(y, p, groups) -> float:
    """Group AUC: per-group AUC averaged with weights = group rows (impressions).

    Groups (usually users) with only one class are skipped, as their AUC is undefined.
    One lexsort by (group, score) gives every group's average ranks at once; no loop over groups.

    Args:
        y: ``[n]`` 0/1 labels. p: ``[n]`` scores. groups: ``[n]`` group ids (any sortable dtype).
    """
    ya, pa = _pair(y, p)
    ga = _vector("groups", groups)
    if ga.shape != ya.shape:
        raise MetricError(f"y has shape {ya.shape} but groups has shape {ga.shape}")
    pos = _binary("y", ya)
    order = np.lexsort((pa, ga))  # group-major, score ascending inside a group
    g_sorted, p_sorted, pos_sorted = ga[order], pa[order], pos[order]
    n = g_sorted.shape[0]
    group_starts = _tie_blocks(g_sorted)
    group_break = np.zeros(n, dtype=bool)
    group_break[group_starts] = True
    # Tie blocks never cross a group boundary, so global average positions minus the group's
    # start are the within-group average ranks.
    global_rank = _block_average_positions(_tie_blocks(p_sorted, group_break), n)
    group_index = np.cumsum(group_break) - 1
    within_rank = global_rank - group_starts[group_index]
    sizes = np.diff(np.append(group_starts, n))
    n_pos = np.bincount(group_index, weights=pos_sorted, minlength=sizes.shape[0])
    n_neg = sizes - n_pos
    rank_sum = np.bincount(group_index, weights=within_rank * pos_sorted, minlength=sizes.shape[0])
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        raise MetricError(f"GAUC is undefined: none of the {sizes.shape[0]} groups has both classes")
    group_auc = (rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2.0) / (n_pos[valid] * n_neg[valid])
    return float(np.average(group_auc, weights=sizes[valid]))


def pcoc(y, p) -> float:
    """Predicted over observed: ``sum(p) / sum(y)``; 1.0 is perfect calibration on average."""
    ya, pa = _pair(y, p)
    observed = float(ya.astype(np.float64).sum())
    if observed <= 0:
        raise MetricError("PCOC is undefined: sum(y) is 0 (no positive labels)")
    return float(pa.astype(np.float64).sum() / observed)


def group_means(groups, *values) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Per-group mean of each value array, for item-level comparisons.

    Returns ``(group_ids [G], [means [G] per value array], counts [G])`` with groups sorted.
    """
    ga = _vector("groups", groups)
    ids, inverse, counts = np.unique(ga, return_inverse=True, return_counts=True)
    means = []
    for i, v in enumerate(values):
        va = _vector(f"values[{i}]", v)
        if va.shape != ga.shape:
            raise MetricError(f"values[{i}] has shape {va.shape} but groups has shape {ga.shape}")
        means.append(np.bincount(inverse, weights=va.astype(np.float64), minlength=ids.shape[0]) / counts)
    return ids, means, counts


def pcvr_bias(y, p, items) -> float:
    """The paper's per-item pCVR bias: mean over items of ``|sum(p) - sum(y)| / sum(y)``.

    This equals ``|p_hat_i - p_i| / p_i`` with ``p_hat_i`` the item's mean prediction and ``p_i``
    its observed rate (the row count cancels). Items without any positive label have no observed
    rate and are skipped; if no item has one, the bias is undefined and :class:`MetricError` is raised.

    Args:
        y: ``[n]`` observed labels (conversions). p: ``[n]`` predicted probabilities.
        items: ``[n]`` item ids.
    """
    ya, pa = _pair(y, p)
    _, (mean_y, mean_p), _ = group_means(items, ya, pa)
    has_rate = mean_y > 0
    if not has_rate.any():
        raise MetricError("pCVR bias is undefined: no item has a positive label")
    return float(np.mean(np.abs(mean_p[has_rate] - mean_y[has_rate]) / mean_y[has_rate]))


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks; ties handled like scipy)."""
    aa, ba = _pair(a, b, "a", "b")
    ra, rb = average_ranks(aa), average_ranks(ba)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denom == 0:
        raise MetricError("Spearman correlation is undefined: a or b is constant")
    return float((ra * rb).sum() / denom)


def ndcg_at_k(relevance, scores, k: int, *, gain: str = "exponential") -> float:
    """NDCG@K of the ranking induced by ``scores`` against graded ``relevance``.

    Used to compare two models: ``relevance`` = the reference model's predictions (e.g. the
    teacher's pCVR per item), ``scores`` = the other model's. Ties in ``scores`` are resolved by
    averaging the gains inside each tie block (McSherry & Najork 2008, as scikit-learn does).

    Args:
        relevance: ``[n]`` non-negative graded relevance.
        scores: ``[n]`` scores that order the items (descending).
        k: cut-off (>= 1; larger than n means all items).
        gain: ``"exponential"`` (``2**rel - 1``, the paper's) or ``"linear"`` (``rel``, scikit-learn's).
    """
    rel, sc = _pair(relevance, scores, "relevance", "scores")
    if k < 1:
        raise MetricError(f"k must be >= 1, got {k}")
    rel = rel.astype(np.float64)
    if rel.min() < 0:
        raise MetricError(f"relevance must be non-negative, got minimum {rel.min()}")
    if gain == "exponential":
        gains = np.expm1(rel * np.log(2.0))
    elif gain == "linear":
        gains = rel
    else:
        raise MetricError(f"gain must be 'exponential' or 'linear', got {gain!r}")
    n = gains.shape[0]
    discount = 1.0 / np.log2(np.arange(n) + 2.0)
    discount[k:] = 0.0
    ideal = float(np.sort(gains)[::-1] @ discount)
    if ideal == 0:
        raise MetricError("NDCG is undefined: every relevance is 0")
    order = np.argsort(-sc.astype(np.float64), kind="stable")
    starts = _tie_blocks(sc[order])
    block_gain = np.add.reduceat(gains[order], starts) / np.diff(np.append(starts, n))
    block_discount = np.add.reduceat(discount, starts)
    return float(block_gain @ block_discount / ideal)


def log_odds(rate: float) -> float:
    """``log(rate / (1 - rate))`` for a rate strictly between 0 and 1 (the logit of a base rate)."""
    import math

    rate = float(rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"base rate must lie strictly between 0 and 1, got {rate}")
    return math.log(rate / (1.0 - rate))
