"""Adaptive historical replay (paper Sec. 3.2.2, Eq. 14-15).

`replay_ratio` maps a shift Δ_shift to the enhancement ratio r_enh exactly as Eq. 14:

    r_enh = 0                          if Δ > θ_high            (major shift: learn from the stream)
          = k * (1 - Δ / θ_high)       if θ_low < Δ <= θ_high    (moderate shift)
          = k                          if Δ <= θ_low            (stable: replay history)

`ReplayController` draws r_enh * |B| rows of the training pool per streaming batch (Eq. 15). As in the
paper, r_enh can be fixed once from Δ_shift of the training pool. Beyond the paper, `rolling=True`
follows the stream: `observe` feeds each batch into `crossadapt.transfer.drift.rolling.RollingDrift`
(histograms of fixed-size windows of `window_rows` rows); whenever a window completes, Δ_shift over the
last n windows (n = `drift.windows`) and r_enh are updated. Both estimates apply the drift config's
noise floor (default on, see `crossadapt.transfer.drift.detector`), so stationary high-cardinality data reads as
stable; the rolling value equals `measure_drift` over the same windows. `rolling_report()` shows the
per-feature picture (corrected, raw and floor) of the recent windows.
`set_ratio_scale(s)` multiplies r_enh by s in [0, 1] (e.g. adaptive distillation's teacher-student gap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossadapt.transfer.drift.detector import (
    DriftConfig,
    DriftReport,
    HistogramBinner,
    infer_vocab_sizes,
    measure_drift,
)
from crossadapt.transfer.drift.rolling import RollingDrift


class ReplayConfig(BaseModel):
    """Replay settings (paper defaults: θ_low = 0.01, θ_high = 0.05, k = 0.1, JS over 10 windows)."""

    model_config = ConfigDict(extra="forbid")

    theta_low: float = Field(0.01, ge=0.0)
    theta_high: float = Field(0.05, gt=0.0)
    max_ratio: float = Field(0.1, ge=0.0, description="k: r_enh under a stable distribution.")
    rolling: bool = Field(False, description="Re-estimate Δ_shift from the stream as batches arrive.")
    window_rows: int = Field(100_000, ge=1, description="Rows per stream window in rolling mode.")
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> ReplayConfig:
        if self.theta_low >= self.theta_high:
            raise ValueError(f"theta_low ({self.theta_low}) must be below theta_high ({self.theta_high})")
        if self.rolling and self.drift.noise_floor != "none" and self.window_rows < 2:
            raise ValueError("window_rows must be >= 2: the noise floor splits each window into halves")
        return self


def replay_ratio(shift: float, theta_low: float = 0.01, theta_high: float = 0.05, k: float = 0.1) -> float:
    """r_enh for a measured Δ_shift (Eq. 14; θ_low and θ_high belong to the lower branch, as written)."""
    if not math.isfinite(shift) or shift < 0:
        raise ValueError(f"shift must be a finite number >= 0, got {shift}")
    if not 0 <= theta_low < theta_high or k < 0:
        raise ValueError(f"need 0 <= theta_low < theta_high and k >= 0, got {theta_low}, {theta_high}, {k}")
    if shift > theta_high:
        return 0.0
    if shift > theta_low:
        return k * (1.0 - shift / theta_high)
    return k


class ReplayHistoryEntry(BaseModel):
    """One change of r_enh: after `step` observed batches (`rows` rows, `windows` complete windows)."""

    model_config = ConfigDict(extra="forbid")

    step: int
    rows: int
    windows: int
    shift: float | None
    ratio: float = Field(description="Effective r_enh (after the scale).")
    reason: Literal["initial", "window", "scale"]


class ReplayController:
    """Decides how many pool rows join each streaming batch, and draws them (Eq. 15).

    Example::

        controller = ReplayController.from_training_pool(ReplayConfig(rolling=True), train.categorical,
                                                         train.numerical, seed=0, vocab_sizes=vocab)
        for batch in stream:
            controller.observe(batch.categorical, batch.numerical)   # rolling mode only
            extra = train.take(controller.draw(len(batch)))          # r_enh * |B| rows of the pool
    """

    def __init__(
        self,
        config: ReplayConfig | None,
        pool_size: int,
        seed: int = 0,
        *,
        initial_shift: float | None = None,
        binner: HistogramBinner | None = None,
    ) -> None:
        """`initial_shift`: Δ_shift of the training pool (required unless rolling; in rolling mode without
        it r_enh stays 0 until two stream windows exist). `binner`: shared histogram layout, required for
        rolling mode (fit it on the training pool so stream windows use the same bins)."""
        self.config = config or ReplayConfig()
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        if self.config.rolling and binner is None:
            raise ValueError("rolling replay needs a HistogramBinner (see ReplayController.from_training_pool)")
        if not self.config.rolling and initial_shift is None:
            raise ValueError("a fixed replay ratio needs initial_shift (measure_drift on the training pool)")
        self.pool_size = pool_size
        self.binner = binner
        self.initial_report: DriftReport | None = None
        self._rng = np.random.default_rng(seed)
        self._shift = initial_shift
        self._base_ratio = self._ratio_for(initial_shift) if initial_shift is not None else 0.0
        self._scale = 1.0
        self._step = 0
        self._rolling: RollingDrift | None = None  # the stream's Δ_shift estimate (rolling mode)
        if self.config.rolling and binner is not None:
            self._rolling = RollingDrift(binner, self.config.drift, self.config.window_rows)
        self._history: list[ReplayHistoryEntry] = []
        self._record("initial")

    @classmethod
    def from_training_pool(
        cls,
        config: ReplayConfig | None,
        categorical: np.ndarray | None,
        numerical: np.ndarray | None,
        seed: int = 0,
        *,
        feature_names: Sequence[str] | None = None,
        vocab_sizes: Sequence[int] | None = None,
    ) -> ReplayController:
        """Measure Δ_shift on the pool (paper: once on D_train), fit the shared bins on it, and build the
        controller over it (pool_size = its rows). The pool's DriftReport is kept as `initial_report`."""
        config = config or ReplayConfig()
        if vocab_sizes is None:
            vocab_sizes = infer_vocab_sizes(categorical)
        binner = HistogramBinner.fit(
            numerical, vocab_sizes, bins=config.drift.bins, binning=config.drift.binning, feature_names=feature_names
        )
        report = measure_drift(categorical, numerical, config.drift, binner=binner)
        controller = cls(config, report.rows, seed, initial_shift=report.shift, binner=binner)
        controller.initial_report = report
        return controller

    # ----------------------------------------------------------------------- ratio

    @property
    def ratio(self) -> float:
        """Current r_enh (Eq. 14 times the external scale)."""
        return self._base_ratio * self._scale

    @property
    def base_ratio(self) -> float:
        return self._base_ratio

    @property
    def ratio_scale(self) -> float:
        return self._scale

    @property
    def shift(self) -> float | None:
        """The Δ_shift r_enh was last computed from (None before any estimate)."""
        return self._shift

    @property
    def history(self) -> list[ReplayHistoryEntry]:
        """Every change of r_enh, oldest first: (step, shift, ratio, ...) for reports."""
        return list(self._history)

    def set_ratio_scale(self, scale: float) -> None:
        """Scale r_enh by `scale` in [0, 1] (kept until changed)."""
        if not (math.isfinite(scale) and 0.0 <= scale <= 1.0):
            raise ValueError(f"ratio scale must be in [0, 1], got {scale}")
        self._scale = float(scale)
        self._record("scale")

    def draw(self, batch_size: int) -> np.ndarray:
        """round(r_enh * batch_size) pool row ids (half up), uniform, distinct where the pool allows;
        sorted int64 (gathers from memory-mapped columns stay local)."""
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        count = int(math.floor(self.ratio * batch_size + 0.5))
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        if self.pool_size == 0:
            raise ValueError("cannot replay from an empty training pool")
        picks = self._rng.choice(self.pool_size, count, replace=count > self.pool_size, shuffle=False)
        return np.sort(picks).astype(np.int64)

    def _ratio_for(self, shift: float) -> float:
        c = self.config
        return replay_ratio(shift, c.theta_low, c.theta_high, c.max_ratio)

    def _record(
        self, reason: Literal["initial", "window", "scale"], rows: int | None = None, windows: int | None = None
    ) -> None:
        """History entry; `rows`/`windows` default to the stream position now."""
        if rows is None or windows is None:
            rows, windows = (self._rolling.rows, self._rolling.windows) if self._rolling else (0, 0)
        self._history.append(
            ReplayHistoryEntry(
                step=self._step, rows=rows, windows=windows, shift=self._shift, ratio=self.ratio, reason=reason
            )
        )

    # ----------------------------------------------------------------------- rolling estimate

    def observe(self, categorical: np.ndarray | None, numerical: np.ndarray | None) -> float:
        """Feed one streaming batch (categorical [B, C] ids, numerical [B, N]) -> the current r_enh.

        Rows fill windows of `window_rows`; a batch may complete several. Each completed window updates
        Δ_shift over the last n windows and r_enh (one history entry per window).
        """
        if not self.config.rolling or self._rolling is None:
            raise RuntimeError("observe() needs ReplayConfig(rolling=True)")
        self._step += 1
        for rows, windows, shift in self._rolling.observe(categorical, numerical):  # one per completed pair
            self._shift = shift
            self._base_ratio = self._ratio_for(shift)
            self._record("window", rows, windows)
        return self.ratio

    def rolling_summary(self) -> dict[str, Any] | None:
        """Where the rolling estimate stands (windows and rows seen, the Δ_shift and r_enh in force), for
        results and checkpoints; None unless rolling."""
        if self._rolling is None:
            return None
        return {"windows": int(self._rolling.windows), "rows": int(self._rolling.rows),
                "shift": None if self._shift is None else float(self._shift), "replay_ratio": float(self.ratio)}

    def rolling_report(self) -> DriftReport | None:
        """Per-feature table of the stream's last n windows (None before two windows completed)."""
        return self._rolling.report() if self._rolling else None

    # ----------------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (random stream, open window, recent pairs, history)."""
        state = {
            "rng": self._rng.bit_generator.state,
            "shift": self._shift,
            "base_ratio": self._base_ratio,
            "scale": self._scale,
            "step": self._step,
            "history": [entry.model_dump() for entry in self._history],
        }
        return {**state, **(self._rolling.state_dict() if self._rolling else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._rolling is not None:
            self._rolling.load_state_dict(state)  # checks the histogram layout first
        self._rng.bit_generator.state = state["rng"]
        self._shift = state["shift"]
        self._base_ratio = float(state["base_ratio"])
        self._scale = float(state["scale"])
        self._step = int(state["step"])
        self._history = [ReplayHistoryEntry.model_validate(entry) for entry in state["history"]]
