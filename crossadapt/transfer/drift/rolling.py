"""Δ_shift of a stream, updated window by window (Eq. 13 over the last n windows, with the noise floor).

`RollingDrift.observe` feeds batches into the open window's histograms; whenever `window_rows` rows
have arrived the window closes and its divergence from the previous window joins the last n - 1 pairs
(n = `DriftConfig.windows`). Only the previous window's histograms and n - 1 rows of per-feature
divergences are kept, so nothing is recomputed over the stream.

The noise floor (`DriftConfig.noise_floor`, see `crossadapt.transfer.drift.detector`) works exactly as in
`measure_drift`: each window is counted as two half histograms, a row's half fixed by its position in
the window (`histogram.half_of_rows`), so the rolling value over windows of equal size equals
`measure_drift` over the same rows, and a stationary high-cardinality stream reads as stationary.
Memory: 4 histograms of T slots (two halves of the open and of the previous window), int64.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from crossadapt.transfer.drift.detector import DriftConfig, DriftReport, report_from_pairs, window_pair_divergences
from crossadapt.transfer.drift.histogram import HistogramBinner, half_of_rows


class RollingDrift:
    """Incremental Δ_shift over fixed-size stream windows.

    Example::

        rolling = RollingDrift(binner, DriftConfig(windows=10), window_rows=100_000)
        for batch in stream:
            for rows, windows, shift in rolling.observe(batch.categorical, batch.numerical):
                print(f"after {rows} rows ({windows} windows): Δ_shift = {shift:.4f}")
    """

    def __init__(self, binner: HistogramBinner, config: DriftConfig | None = None, window_rows: int = 100_000) -> None:
        self.binner = binner
        self.config = config or DriftConfig()
        self.window_rows = int(window_rows)
        if self.window_rows < (2 if self.corrected else 1):
            need = "2 (the noise floor splits windows in halves)" if self.corrected else "1"
            raise ValueError(f"window_rows = {window_rows}; need at least {need}")
        self.rows = self.windows = 0
        self._halves = np.zeros((2, binner.total_slots), dtype=np.int64)  # open window, [half, slot] counts
        self._open_rows = 0
        self._last_window: np.ndarray | None = None  # [T] distribution of the latest complete window
        self._last_halves: np.ndarray | None = None  # [2, T] its half counts (None: unknown, no floor)
        self._open_unsplit = False  # the open window was resumed from a state without halves
        pairs = self.config.windows - 1
        self._pairs: deque[np.ndarray] = deque(maxlen=pairs)  # each [F]: reported (corrected) divergences
        self._raw: deque[np.ndarray] = deque(maxlen=pairs)  # each [F]: plug-in divergences
        self._floor: deque[np.ndarray] = deque(maxlen=pairs)  # each [F]: noise floors (with correction)

    @property
    def corrected(self) -> bool:
        return self.config.noise_floor != "none"

    @property
    def shift(self) -> float | None:
        """Δ_shift over the recent pairs (None before two windows completed)."""
        return float(np.mean(self._pairs)) if self._pairs else None

    def observe(self, categorical: np.ndarray | None, numerical: np.ndarray | None) -> list[tuple[int, int, float]]:
        """Feed one batch (categorical [B, C] ids, numerical [B, N]) -> (rows, windows, Δ_shift) after each
        window pair it completed (a batch may complete several windows, or none)."""
        rows = len(categorical) if categorical is not None else len(numerical) if numerical is not None else 0
        if rows == 0:
            return []
        size, total = self.window_rows, self.binner.total_slots
        slots = self.binner.slot_ids(categorical, numerical)  # [B, F]; O(B·F), independent of vocab sizes
        # Cut the batch where windows end: first the rest of the open window, then whole windows.
        cuts = np.arange(size - self._open_rows, rows, size)
        bounds = np.concatenate([[0], cuts, [rows]])
        events = []
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            if size >= 2:  # the same halves measure_drift uses: by each row's position in its window
                positions = np.arange(self._open_rows, self._open_rows + hi - lo)
                half = half_of_rows(positions, size, self.config.floor_runs)
            else:
                half = np.zeros(hi - lo, dtype=np.int64)
            np.add.at(self._halves.reshape(-1), (slots[lo:hi] + (half * total)[:, None]).ravel(), 1)
            self._open_rows += hi - lo
            self.rows += hi - lo
            if self._open_rows == size and self._close_window():
                events.append((self.rows, self.windows, float(np.mean(self._pairs))))
        return events

    def _close_window(self) -> bool:
        """Close the open window; True if a new pair was measured."""
        halves, split = self._halves, not self._open_unsplit
        window = halves.sum(axis=0) / float(self._open_rows)
        self._halves = np.zeros_like(halves)
        self._open_rows, self._open_unsplit = 0, False
        self.windows += 1
        c = self.config
        measured = False
        if not self.corrected and self._last_window is not None:
            raw = self.binner.divergence(self._last_window, window, c.metric, c.kl_epsilon)[0]
            self._raw.append(raw)
            self._pairs.append(raw)
            measured = True
        elif self.corrected and split and self._last_halves is not None:
            pair = np.stack([self._last_halves, halves])  # [2 windows, 2 halves, T]
            raw, floor = (d[0] for d in window_pair_divergences(self.binner, pair, c.metric, c.kl_epsilon))
            self._raw.append(raw)
            self._floor.append(floor)
            self._pairs.append(np.maximum(raw - floor, 0.0))
            measured = True
        # else: the first window, or one next to a window resumed without halves: it only becomes the reference
        self._last_window = window
        self._last_halves = halves if split else None
        return measured

    def report(self) -> DriftReport | None:
        """Per-feature table of the last n windows (None before two windows completed)."""
        if not self._pairs:
            return None
        rows = (len(self._pairs) + 1) * self.window_rows
        if self.corrected and len(self._floor) == len(self._raw) == len(self._pairs):
            return report_from_pairs(
                np.stack(self._raw), self.binner, self.config.metric, rows, floor=np.stack(self._floor),
                noise_floor=self.config.noise_floor,
            )
        return report_from_pairs(np.stack(self._pairs), self.binner, self.config.metric, rows)

    # ----------------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        """Open window, previous window and recent pairs (keys shared with ReplayController's state)."""
        return {
            "rows": self.rows,
            "windows": self.windows,
            "partial": self._halves.sum(axis=0),
            "partial_rows": self._open_rows,
            "last_window": None if self._last_window is None else self._last_window.copy(),
            "pairs": [p.copy() for p in self._pairs],
            "halves": self._halves.copy(),
            "open_unsplit": self._open_unsplit,
            "last_halves": None if self._last_halves is None else self._last_halves.copy(),
            "raw_pairs": [p.copy() for p in self._raw],
            "floor_pairs": [p.copy() for p in self._floor],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output. A state saved before windows were kept in halves resumes too;
        with the noise floor on, the window open at the save then takes part in no pair."""
        slots = self.binner.total_slots
        if len(state["partial"]) != slots:
            raise ValueError(f"state has {len(state['partial'])} histogram slots, this controller's binner has {slots}")
        self.rows, self.windows = int(state["rows"]), int(state["windows"])
        self._open_rows = int(state["partial_rows"])
        last = state["last_window"]
        self._last_window = None if last is None else np.asarray(last, dtype=np.float64).copy()
        as_deque = lambda arrays: deque((np.asarray(a, dtype=np.float64) for a in arrays), maxlen=self._pairs.maxlen)  # noqa: E731
        self._pairs = as_deque(state["pairs"])
        if "halves" in state:
            self._halves = np.asarray(state["halves"], dtype=np.int64).copy()
            self._open_unsplit = bool(state["open_unsplit"])
            last_halves = state["last_halves"]
            self._last_halves = None if last_halves is None else np.asarray(last_halves, dtype=np.int64).copy()
            self._raw, self._floor = as_deque(state["raw_pairs"]), as_deque(state["floor_pairs"])
        else:  # older format: the open window's rows are known only in total
            self._halves = np.zeros((2, slots), dtype=np.int64)
            self._halves[0] = np.asarray(state["partial"], dtype=np.int64)
            self._open_unsplit, self._last_halves = True, None
            self._raw, self._floor = as_deque(state["pairs"]), as_deque([])
