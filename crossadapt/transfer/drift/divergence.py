"""Divergences between histograms, for shift detection (paper Sec. 3.2.2: JS, KL, Wasserstein).

Every metric works on one flat slot layout: p, q [P, T] hold P pairs of distributions over T slots,
and segment s (one feature) covers columns starts[s] .. starts[s] + sizes[s] - 1 and sums to 1.
`segment_divergence` computes all pairs and features in one vectorised pass (reduced per feature with
np.add.reduceat); `js_divergence`, `kl_divergence` and `wasserstein_1d` are the one-feature views.

- `js`: Jensen-Shannon divergence in bits (log base 2), bounded in [0, 1]; 1 for disjoint supports.
- `kl`: KL(p || q) in nats after additive smoothing p' = (p + ε) / (1 + ε·m) over the m slots of the
  feature (unbounded otherwise).
- `wasserstein`: 1-D earth mover's distance over the slots' `positions` [T] (sorted within each
  segment); no mass moves across a segment boundary.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Metric = Literal["js", "kl", "wasserstein"]


def _xlogx_over_y(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise x * ln(x / y), 0 where x == 0 (the limit)."""
    positive = x > 0
    return np.where(positive, x * np.log(np.where(positive, x, 1.0) / np.where(positive, y, 1.0)), 0.0)


def segment_divergence(
    p: np.ndarray,
    q: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    metric: Metric,
    *,
    positions: np.ndarray | None = None,
    kl_epsilon: float = 0.0,
) -> np.ndarray:
    """p, q [P, T] (each segment sums to 1) -> [P, S] divergence per row and segment (feature).

    Segment s covers columns starts[s] .. starts[s] + sizes[s] - 1; `positions` [T] (sorted within
    each segment) is needed for Wasserstein.
    """
    if metric == "js":
        mid = 0.5 * (p + q)
        terms = (0.5 / np.log(2.0)) * (_xlogx_over_y(p, mid) + _xlogx_over_y(q, mid))
    elif metric == "kl":
        norm = np.repeat(1.0 + kl_epsilon * sizes, sizes)
        ps, qs = (p + kl_epsilon) / norm, (q + kl_epsilon) / norm
        terms = _xlogx_over_y(ps, qs)
    elif metric == "wasserstein":
        if positions is None:
            raise ValueError("wasserstein needs slot positions")
        cdf = np.cumsum(p - q, axis=1)
        before = np.concatenate([np.zeros((len(p), 1)), cdf], axis=1)[:, starts]  # cdf just before each segment
        cdf -= np.repeat(before, sizes, axis=1)
        gap = np.diff(positions, append=positions[-1] if len(positions) else 0.0)
        gap[starts + sizes - 1] = 0.0  # no mass moves from a segment's last slot into the next feature
        terms = np.abs(cdf) * gap
    else:
        raise ValueError(f"unknown metric {metric!r}; expected js, kl or wasserstein")
    return np.add.reduceat(terms, starts, axis=1)


# The name drift.py used before this module was split off; kept so old imports still resolve.
_segment_divergence = segment_divergence


def _as_distributions(*weights: np.ndarray) -> list[np.ndarray]:
    out = []
    for w in weights:
        w = np.atleast_2d(np.asarray(w, dtype=np.float64))
        if (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("weights must be finite and >= 0")
        total = w.sum(axis=-1, keepdims=True)
        if (total <= 0).any():
            raise ValueError("every distribution needs a positive total weight")
        out.append(w / total)
    return out


def _one_segment(p: np.ndarray, q: np.ndarray, metric: Metric, **kwargs: object) -> np.ndarray | float:
    squeeze = np.ndim(p) == 1 and np.ndim(q) == 1
    pn, qn = _as_distributions(p, q)
    pn, qn = np.broadcast_arrays(pn, qn)
    m = pn.shape[-1]
    value = segment_divergence(pn, qn, np.array([0]), np.array([m]), metric, **kwargs)[:, 0]  # type: ignore[arg-type]
    return float(value[0]) if squeeze else value


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
    """Jensen-Shannon divergence in bits over the last axis ([m] or [P, m]; weights are normalised)."""
    return _one_segment(p, q, "js")


def kl_divergence(p: np.ndarray, q: np.ndarray, epsilon: float = 0.0) -> np.ndarray | float:
    """KL(p || q) in nats after smoothing p' = (p + ε) / (1 + ε·m); ε = 0 gives inf where q = 0 < p."""
    with np.errstate(divide="ignore"):
        return _one_segment(p, q, "kl", kl_epsilon=epsilon)


def wasserstein_1d(p: np.ndarray, q: np.ndarray, positions: np.ndarray) -> np.ndarray | float:
    """Earth mover's distance between weights p and q on sorted 1-D `positions` [m]."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 1 or (np.diff(positions) < 0).any():
        raise ValueError("positions must be a sorted 1-D array")
    return _one_segment(p, q, "wasserstein", positions=positions)
