"""Per-window feature histograms on one flat slot layout (for shift detection, paper Sec. 3.2.2).

Categorical feature j owns V_j slots (its ids 0..V_j-1); numerical feature j owns 1 + nbins_j slots
(slot 0 = missing/NaN, then bins whose edges all windows share). Feature j owns slots
starts[j] .. starts[j] + sizes[j] - 1 of the layout [T]. Windows are contiguous row ranges, so a
categorical window is one np.bincount of its id slice and a numerical window is one sort plus a
bisection of the few bin edges (cheaper than bisecting every value).

Window halves (for the noise floor of `crossadapt.transfer.drift.detector`): a window of m rows is cut into
R = 2·min(runs, m // 2) runs of consecutive rows (run of row r = r·R // m); even runs form half 0,
odd runs half 1. Both halves span the whole window (so drift inside a window does not separate them),
and rows that arrive together (one page view's impressions) stay in the same half.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from crossadapt.transfer.drift.divergence import Metric, segment_divergence


def half_of_rows(positions: np.ndarray, window_rows: int, runs: int) -> np.ndarray:
    """positions [n] of rows inside a window of `window_rows` rows -> [n] int64 half (0 or 1)."""
    if window_rows < 2:
        raise ValueError(f"a window of {window_rows} row(s) cannot be split into two halves")
    count = 2 * min(runs, window_rows // 2)
    return (np.asarray(positions, dtype=np.int64) * count // window_rows) % 2


def window_bounds(rows: int, windows: int) -> np.ndarray:
    """[windows + 1] row offsets of equal consecutive windows (sizes differ by at most 1)."""
    return (np.arange(windows + 1, dtype=np.int64) * rows) // windows


def infer_vocab_sizes(categorical: np.ndarray | None) -> list[int]:
    """max id + 1 per column of categorical [n, C] (prefer the FeatureSpec's sizes: a window may miss ids)."""
    if categorical is None or categorical.shape[1] == 0:
        return []
    return [int(categorical[:, j].max()) + 1 if len(categorical) else 1 for j in range(categorical.shape[1])]


class HistogramBinner:
    """Maps every feature value to a slot of one flat histogram layout [T] (categorical first).

    `counts` gives [W, T] counts of W row windows, `half_counts` [W, 2, T] counts of their halves.
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
        return self._count(categorical, numerical, bounds, features, runs=None)

    def half_counts(
        self,
        categorical: np.ndarray | None,
        numerical: np.ndarray | None,
        bounds: np.ndarray | None = None,
        features: range | None = None,
        runs: int = 16,
    ) -> np.ndarray:
        """Like `counts`, per half of each window (see `half_of_rows`) -> [W, 2, slots]; the two halves
        add up to `counts`."""
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        return self._count(categorical, numerical, bounds, features, runs=runs)

    def _count(
        self,
        categorical: np.ndarray | None,
        numerical: np.ndarray | None,
        bounds: np.ndarray | None,
        features: range | None,
        runs: int | None,
    ) -> np.ndarray:
        """[W, 1 or 2 (halves), slots] counts; `runs` None counts whole windows."""
        c, m = len(self.vocab_sizes), len(self.numerical_edges)
        categorical = _columns(categorical, c, "categorical")
        numerical = _columns(numerical, m, "numerical")
        if c and m and len(categorical) != len(numerical):
            raise ValueError(f"categorical has {len(categorical)} rows, numerical {len(numerical)}")
        rows = len(categorical) if c else len(numerical)
        bounds = np.array([0, rows]) if bounds is None else np.asarray(bounds, dtype=np.int64)
        features = features if features is not None else range(c + m)
        columns = self.slot_range(features)
        cat_cols = slice(min(features.start, c), min(features.stop, c))
        num_cols = slice(max(features.start, c) - c, max(features.stop, c) - c)
        parts = 1 if runs is None else 2
        out = np.zeros((len(bounds) - 1, parts, columns.stop - columns.start), dtype=np.int64)
        for w in range(len(bounds) - 1):
            lo, hi = int(bounds[w]), int(bounds[w + 1])
            if runs is None:
                cat_block, num_block, cuts = categorical[lo:hi, cat_cols], numerical[lo:hi, num_cols], [0, hi - lo]
            else:  # the window's rows reordered half 0 first: a few run copies, shared by the group's features
                pieces, first = _half_runs(hi - lo, runs)
                cat_block = np.concatenate([categorical[lo + a : lo + b, cat_cols] for a, b in pieces])
                num_block = np.concatenate([numerical[lo + a : lo + b, num_cols] for a, b in pieces])
                cuts = [0, first, hi - lo]
            for j in features:
                start = int(self.starts[j]) - columns.start
                values = cat_block[:, j - cat_cols.start] if j < c else num_block[:, j - c - num_cols.start]
                for part in range(parts):
                    try:
                        out[w, part, start : start + int(self.sizes[j])] = self._window_counts(
                            j, values[cuts[part] : cuts[part + 1]], lo
                        )
                    except ValueError:
                        whole = categorical[lo:hi, j] if j < c else numerical[lo:hi, j - c]
                        self._window_counts(j, whole, lo)  # names the offending row of the window in time order
                        raise
        return out[:, 0] if runs is None else out

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

    def _window_counts(self, j: int, values: np.ndarray, first_row: int) -> np.ndarray:
        if j < len(self.vocab_sizes):
            return self._categorical_counts(j, values, first_row)
        return self._numerical_counts(j, values, first_row)

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
        return segment_divergence(
            np.atleast_2d(p),
            np.atleast_2d(q),
            self.starts[features.start : features.stop] - columns.start,
            self.sizes[features.start : features.stop],
            metric,
            positions=self.positions[columns],
            kl_epsilon=kl_epsilon,
        )


def _half_runs(rows: int, runs: int) -> tuple[list[tuple[int, int]], int]:
    """Row ranges of a window's runs, half 0's first (as `half_of_rows` assigns them), and half 0's rows."""
    if rows < 2:
        raise ValueError(f"a window of {rows} row(s) cannot be split into two halves")
    count = 2 * min(runs, rows // 2)
    edges = -((-np.arange(count + 1, dtype=np.int64) * rows) // count)  # run k starts at ceil(k·rows/count)
    pieces = [(int(edges[k]), int(edges[k + 1])) for k in [*range(0, count, 2), *range(1, count, 2)]]
    return pieces, sum(b - a for a, b in pieces[: count // 2])


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
