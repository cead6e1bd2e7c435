"""Distribution shift between consecutive time windows (paper Sec. 3.2.2, Eq. 13).

The rows (time order) are cut into n equal consecutive windows W_1..W_n; for every feature j and
adjacent pair, Δ_j^(i) = D(P_j^{W_i}, P_j^{W_{i+1}}), and Δ_shift = mean over pairs and features.

Choices the paper leaves open:
- Histograms. Categorical feature: normalised counts over its vocabulary (ids 0..V_f-1). Numerical
  feature: b bins whose edges are shared by all windows, fitted on the pooled data: `binning="quantile"`
  (default; equal-mass bins, robust to the heavy tails of CTR counts; repeated quantiles merge, so a
  discrete feature gets fewer bins) or `"range"` (b equal-width bins over [min, max]). Values outside the
  fitted range fall into the outermost bins. NaN counts as "missing" and gets its own slot; ±inf is an
  error.
- Metrics. `js` (default): Jensen-Shannon divergence in bits (log base 2), bounded in [0, 1]; 1 for
  disjoint supports. `kl`: KL(P_{W_i} || P_{W_{i+1}}) in nats after additive smoothing
  p' = (p + ε) / (1 + ε·m) over the m slots of the feature (unbounded otherwise). `wasserstein`: 1-D
  earth mover's distance over slot positions normalised to [0, 1]: numerical bin centres scaled by the
  fitted range (the missing slot sits one mean bin width below the lowest bin), categorical ids as
  id / (V - 1). So every metric is scale-free and features can be averaged. Categorical ids are not
  ordinal in general, so Wasserstein on them only measures movement along the vocabulary order.

Noise floor: these are plug-in estimates, so even a stationary stream measures a positive divergence
that grows with (distinct values) / (rows per window): on Criteo-like vocabularies (up to 250k ids per
field) 200k-row windows read JS ≈ 0.05 on stationary data, 800k-row windows ≈ 0.016. Calibrate θ
or the window size so that stable data lands below θ_low (the per-feature table shows which fields
dominate).

Speed: all features share one flat slot layout [T] (feature j owns slots starts[j]..starts[j]+sizes[j]);
windows are contiguous row ranges, so a categorical window is one np.bincount of its id slice and a
numerical window is one sort plus a bisection of the few bin edges (cheaper than bisecting every value);
each metric is computed for all window pairs and features in one vectorised pass, reduced per feature
with np.add.reduceat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["js", "kl", "wasserstein"]


class DriftConfig(BaseModel):
    """Shift detection settings (paper defaults: JS, n=10 windows, b=50 bins)."""

    model_config = ConfigDict(extra="forbid")

    metric: Metric = "js"
    windows: int = Field(10, ge=2, description="n: equal consecutive windows.")
    bins: int = Field(50, ge=1, description="b: histogram bins per numerical feature.")
    binning: Literal["quantile", "range"] = "quantile"
    kl_epsilon: float = Field(1e-6, gt=0.0, description="Additive smoothing for KL, on probabilities.")


# --------------------------------------------------------------------------- divergences


def _xlogx_over_y(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise x * ln(x / y), 0 where x == 0 (the limit)."""
    positive = x > 0
    return np.where(positive, x * np.log(np.where(positive, x, 1.0) / np.where(positive, y, 1.0)), 0.0)


def _segment_divergence(
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
    value = _segment_divergence(pn, qn, np.array([0]), np.array([m]), metric, **kwargs)[:, 0]  # type: ignore[arg-type]
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


# --------------------------------------------------------------------------- histograms


class HistogramBinner:
    """Maps every feature value to a slot of one flat histogram layout [T] (categorical first).

    Categorical feature j owns V_j slots (its ids); numerical feature j owns 1 + nbins_j slots
    (slot 0 = missing/NaN, then its bins). `counts` gives [windows, T] counts.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        numerical_edges: Sequence[np.ndarray],
        feature_names: Sequence[str] | None = None,
    ) -> None:
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        if any(v < 1 for v in self.vocab_sizes):
            raise ValueError(f"vocab sizes must be >= 1, got {self.vocab_sizes}")
        self.numerical_edges = [np.asarray(e, dtype=np.float64) for e in numerical_edges]
        for j, edges in enumerate(self.numerical_edges):
            if edges.ndim != 1 or len(edges) < 2 or (np.diff(edges) < 0).any():
                raise ValueError(f"numerical feature {j}: edges must be sorted with >= 2 values")
        c, n = len(self.vocab_sizes), len(self.numerical_edges)
        names = list(feature_names) if feature_names is not None else None
        if names is None:
            names = [f"cat_{j}" for j in range(c)] + [f"num_{j}" for j in range(n)]
        if len(names) != c + n:
            raise ValueError(f"{len(names)} feature names for {c} categorical + {n} numerical features")
        if c + n == 0:
            raise ValueError("no features to measure")
        self.feature_names = names
        self.kinds = ["categorical"] * c + ["numerical"] * n
        self.sizes = np.array(self.vocab_sizes + [len(e) for e in self.numerical_edges], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.total_slots = int(self.sizes.sum())
        self.positions = np.concatenate(
            [np.arange(v) / max(v - 1, 1) for v in self.vocab_sizes]
            + [self._numerical_positions(e) for e in self.numerical_edges]
        )

    @staticmethod
    def _numerical_positions(edges: np.ndarray) -> np.ndarray:
        """Missing slot, then bin centres, scaled so the fitted range maps to [0, 1]."""
        span = edges[-1] - edges[0]
        span = span if span > 0 else 1.0
        centres = ((edges[:-1] + edges[1:]) / 2 - edges[0]) / span
        return np.concatenate([[centres[0] - 1.0 / len(centres)], centres])

    @classmethod
    def fit(
        cls,
        numerical: np.ndarray | None,
        vocab_sizes: Sequence[int],
        *,
        bins: int = 50,
        binning: Literal["quantile", "range"] = "quantile",
        feature_names: Sequence[str] | None = None,
    ) -> HistogramBinner:
        """Shared bin edges from pooled numerical values [n, N] (NaN ignored; quantiles are exact,
        linear interpolation as np.quantile, read off one sort of the column)."""
        edges = []
        columns = 0 if numerical is None else numerical.shape[1]
        for j in range(columns):
            values = np.sort(numerical[:, j])  # type: ignore[index]
            values = values[: np.searchsorted(values, np.nan)].astype(np.float64)  # NaN sorts last
            if len(values) and np.isinf(values[[0, -1]]).any():
                raise ValueError(f"numerical feature {_name(feature_names, len(vocab_sizes) + j)} has ±inf values")
            if len(values) == 0:
                edges.append(np.zeros(2))
                continue
            if binning == "quantile":
                at = np.linspace(0.0, 1.0, bins + 1) * (len(values) - 1)
                low = np.floor(at).astype(np.int64)
                high = np.minimum(low + 1, len(values) - 1)
                e = np.unique(values[low] + (at - low) * (values[high] - values[low]))
            else:
                e = np.linspace(values[0], values[-1], bins + 1)
            edges.append(e if len(e) >= 2 and e[-1] > e[0] else np.array([e[0], e[0]]))
        return cls(vocab_sizes, edges, feature_names)

    def feature_groups(self, max_slots: int = 1 << 18) -> list[range]:
        """Consecutive features in groups of at most `max_slots` slots (a bigger feature is a group alone),
        so per-group temporaries stay small whatever the vocabulary."""
        groups, first, slots = [], 0, 0
        for j, size in enumerate(self.sizes.tolist()):
            if j > first and slots + size > max_slots:
                groups.append(range(first, j))
                first, slots = j, 0
            slots += size
        groups.append(range(first, len(self.sizes)))
        return groups

    def slot_range(self, features: range) -> slice:
        """The columns of the flat layout that `features` own."""
        last = features.stop - 1
        return slice(int(self.starts[features.start]), int(self.starts[last] + self.sizes[last]))

    def counts(
        self,
        categorical: np.ndarray | None,
        numerical: np.ndarray | None,
        bounds: np.ndarray | None = None,
        features: range | None = None,
    ) -> np.ndarray:
        """categorical [n, C] ids, numerical [n, N] -> counts [W, T] for the W contiguous row windows
        bounds[w] .. bounds[w+1] (bounds [W+1]; None = one window of all rows). With `features` (a
        consecutive range), only their columns: [W, slots of those features]."""
        c, m = len(self.vocab_sizes), len(self.numerical_edges)
        categorical = _columns(categorical, c, "categorical")
        numerical = _columns(numerical, m, "numerical")
        if c and m and len(categorical) != len(numerical):
            raise ValueError(f"categorical has {len(categorical)} rows, numerical {len(numerical)}")
        rows = len(categorical) if c else len(numerical)
        bounds = np.array([0, rows]) if bounds is None else np.asarray(bounds, dtype=np.int64)
        features = features if features is not None else range(c + m)
        columns = self.slot_range(features)
        out = np.zeros((len(bounds) - 1, columns.stop - columns.start), dtype=np.int64)
        for j in features:
            start = int(self.starts[j]) - columns.start
            for w in range(len(bounds) - 1):
                lo, hi = int(bounds[w]), int(bounds[w + 1])
                target = out[w, start : start + int(self.sizes[j])]
                if j < c:
                    target[:] = self._categorical_counts(j, categorical[lo:hi, j], lo)
                else:
                    target[:] = self._numerical_counts(j, numerical[lo:hi, j - c], lo)
        return out

    def slot_ids(self, categorical: np.ndarray | None, numerical: np.ndarray | None) -> np.ndarray:
        """categorical [B, C], numerical [B, N] -> [B, F] flat slot of every value (for small batches:
        accumulating these costs O(B·F), where `counts` costs O(T) per window)."""
        c, m = len(self.vocab_sizes), len(self.numerical_edges)
        categorical = _columns(categorical, c, "categorical")
        numerical = _columns(numerical, m, "numerical")
        rows = len(categorical) if c else len(numerical)
        out = np.empty((rows, c + m), dtype=np.int64)
        if c:
            if not np.issubdtype(categorical.dtype, np.integer):
                raise ValueError(f"categorical features hold {categorical.dtype}, not integer ids")
            bad = (categorical < 0) | (categorical >= np.asarray(self.vocab_sizes))
            if bad.any():
                row, j = np.argwhere(bad)[0]
                raise ValueError(
                    f"categorical feature {self.feature_names[j]!r}: row {row} has id {categorical[row, j]}, "
                    f"outside [0, {self.vocab_sizes[j]})"
                )
            out[:, :c] = categorical + self.starts[:c]
        for k, edges in enumerate(self.numerical_edges):
            values = numerical[:, k]
            if np.isinf(values).any():
                row = int(np.argmax(np.isinf(values)))
                raise ValueError(f"numerical feature {self.feature_names[c + k]!r}: row {row} is ±inf")
            slot = np.searchsorted(edges[1:-1], values, side="right") + 1
            slot[np.isnan(values)] = 0
            out[:, c + k] = slot + self.starts[c + k]
        return out

    def _categorical_counts(self, j: int, ids: np.ndarray, first_row: int) -> np.ndarray:
        vocab = self.vocab_sizes[j]
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"categorical feature {self.feature_names[j]!r} holds {ids.dtype}, not integer ids")
        try:
            # bincount raises on negative ids and cannot cast uint64 safely
            hist = np.bincount(ids.astype(np.int64) if ids.dtype == np.uint64 else ids, minlength=vocab)
        except ValueError:
            hist = np.zeros(vocab + 1, np.int64)
        if len(hist) > vocab:  # an id >= vocab (or < 0): find the first offender for the message
            bad = (ids < 0) | (ids >= vocab)
            row = int(np.argmax(bad))
            raise ValueError(
                f"categorical feature {self.feature_names[j]!r}: row {first_row + row} has id {ids[row]}, "
                f"outside [0, {vocab})"
            )
        return hist

    def _numerical_counts(self, j: int, values: np.ndarray, first_row: int) -> np.ndarray:
        """Missing count, then per-bin counts: bin i holds inner[i-1] <= x < inner[i] (outer bins open)."""
        edges = self.numerical_edges[j - len(self.vocab_sizes)]
        ordered = np.sort(values)  # sorting a window then bisecting the few edges beats bisecting every value
        valid = int(np.searchsorted(ordered, np.nan))  # NaN sorts last
        if valid and np.isinf(ordered[[0, valid - 1]]).any():
            row = int(np.argmax(np.isinf(values)))
            raise ValueError(f"numerical feature {self.feature_names[j]!r}: row {first_row + row} is ±inf")
        below = np.searchsorted(ordered[:valid], edges[1:-1], side="left")
        return np.concatenate([[len(values) - valid], np.diff(np.concatenate([[0], below, [valid]]))])

    def divergence(
        self,
        p: np.ndarray,
        q: np.ndarray,
        metric: Metric = "js",
        kl_epsilon: float = 1e-6,
        features: range | None = None,
    ) -> np.ndarray:
        """p, q [P, T] per-window distributions (counts / window rows) -> [P, F] divergence per feature.
        With `features`, p and q hold only those features' columns and the result is [P, len(features)]."""
        features = features if features is not None else range(len(self.sizes))
        columns = self.slot_range(features)
        return _segment_divergence(
            np.atleast_2d(p),
            np.atleast_2d(q),
            self.starts[features.start : features.stop] - columns.start,
            self.sizes[features.start : features.stop],
            metric,
            positions=self.positions[columns],
            kl_epsilon=kl_epsilon,
        )


def _name(names: Sequence[str] | None, j: int) -> str:
    return repr(names[j]) if names is not None and j < len(names) else f"#{j}"


def _columns(array: np.ndarray | None, expected: int, what: str) -> np.ndarray:
    if array is None:
        if expected:
            raise ValueError(f"{what} is None but {expected} {what} features were declared")
        return np.zeros((0, 0))
    if array.ndim != 2 or array.shape[1] != expected:
        raise ValueError(f"{what} has shape {array.shape}; expected [rows, {expected}]")
    return array


# --------------------------------------------------------------------------- report


class FeatureDrift(BaseModel):
    """One feature's shift: mean and max over window pairs, and every pair's value (length n - 1)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["categorical", "numerical"]
    mean: float
    max: float
    per_pair: list[float]


class DriftReport(BaseModel):
    """Δ_shift (Eq. 13), its per-pair means, and the per-feature table sorted by mean divergence (largest
    first, so the features that moved come on top)."""

    model_config = ConfigDict(extra="forbid")

    metric: Metric
    windows: int
    rows: int
    shift: float
    per_window_pair: list[float] = Field(description="Mean over features for each adjacent pair (W_i, W_i+1).")
    per_feature: list[FeatureDrift]

    def feature(self, name: str) -> FeatureDrift:
        for entry in self.per_feature:
            if entry.name == name:
                return entry
        raise KeyError(f"no feature {name!r} in this drift report")

    def format_table(self, top: int | None = None) -> str:
        """Plain text: Δ_shift, then one line per feature (largest mean divergence first)."""
        lines = [
            f"Δ_shift = {self.shift:.5f} ({self.metric}, {self.windows} windows over {self.rows} rows)",
            f"{'feature':24s} {'type':11s} {'mean':>9s} {'max':>9s}",
        ]
        for entry in self.per_feature[:top]:
            lines.append(f"{entry.name[:24]:24s} {entry.kind:11s} {entry.mean:9.5f} {entry.max:9.5f}")
        return "\n".join(lines)


def infer_vocab_sizes(categorical: np.ndarray | None) -> list[int]:
    """max id + 1 per column of categorical [n, C] (prefer the FeatureSpec's sizes: a window may miss ids)."""
    if categorical is None or categorical.shape[1] == 0:
        return []
    return [int(categorical[:, j].max()) + 1 if len(categorical) else 1 for j in range(categorical.shape[1])]


def window_bounds(rows: int, windows: int) -> np.ndarray:
    """[windows + 1] row offsets of equal consecutive windows (sizes differ by at most 1)."""
    return (np.arange(windows + 1, dtype=np.int64) * rows) // windows


def measure_drift(
    categorical: np.ndarray | None,
    numerical: np.ndarray | None,
    config: DriftConfig | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    vocab_sizes: Sequence[int] | None = None,
    binner: HistogramBinner | None = None,
) -> DriftReport:
    """Δ_shift over n equal consecutive windows of time-ordered rows (Eq. 13).

    categorical [n, C] ids in 0..V_f-1 (`vocab_sizes` from the FeatureSpec; inferred as max id + 1 when
    omitted), numerical [n, N] float. `feature_names` lists categorical names then numerical names.
    A prepared `binner` (shared edges, e.g. fitted on the training pool) overrides vocab/bin fitting.
    """
    config = config or DriftConfig()
    if binner is None:
        if vocab_sizes is None:
            vocab_sizes = infer_vocab_sizes(categorical)
        binner = HistogramBinner.fit(
            numerical, vocab_sizes, bins=config.bins, binning=config.binning, feature_names=feature_names
        )
    rows = len(categorical) if categorical is not None else len(numerical) if numerical is not None else 0
    if rows < config.windows:
        raise ValueError(f"{rows} rows cannot fill {config.windows} windows")
    bounds = window_bounds(rows, config.windows)
    window_rows = np.diff(bounds)[:, None].astype(np.float64)
    pair = np.empty((config.windows - 1, len(binner.sizes)))  # [n-1, F]
    for group in binner.feature_groups():  # bounded memory: histograms of a few features at a time
        probs = binner.counts(categorical, numerical, bounds, group) / window_rows  # [n, slots]
        pair[:, group.start : group.stop] = binner.divergence(
            probs[:-1], probs[1:], config.metric, config.kl_epsilon, group
        )
    return report_from_pairs(pair, binner, config.metric, rows)


def report_from_pairs(pair: np.ndarray, binner: HistogramBinner, metric: Metric, rows: int) -> DriftReport:
    """pair [n-1, F] divergences of adjacent windows -> DriftReport (shift = mean of all entries)."""
    means = pair.mean(axis=0)
    per_feature = [
        FeatureDrift(
            name=binner.feature_names[j],
            kind=binner.kinds[j],  # type: ignore[arg-type]
            mean=float(means[j]),
            max=float(pair[:, j].max()),
            per_pair=pair[:, j].tolist(),
        )
        for j in np.argsort(-means, kind="stable")
    ]
    return DriftReport(
        metric=metric,
        windows=len(pair) + 1,
        rows=rows,
        shift=float(pair.mean()),
        per_window_pair=pair.mean(axis=1).tolist(),
        per_feature=per_feature,
    )
