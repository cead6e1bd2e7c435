"""The drift measurement, without Celery: plan, fit, one window's histograms, reduce.

    fit                        # bins fitted on the reference pool; both datasets' partition indexes
      → window(ref, w) × n     # the reference's n equal windows: half-window histograms [2, T]
      → window(stream, w) × W  # the stream's windows of `window_rows` rows (W known after fit)
      → reduce                 # divergences, Δ_shift and replay ratio, as the core computes them

The numbers are the core's (crossadapt.transfer): the reference report is `measure_drift` over the
reference with bins fitted on it (what `ReplayController.from_training_pool` measures in the
in-process switch), its replay ratio Eq. 14; the stream is what a rolling `ReplayController`
(`RollingDrift`) sees when the stream is fed to it: after each window, the divergence of the
window from the previous one, Δ_shift over the last n - 1 pairs and the replay ratio. A window
task counts one window's rows into half histograms (`HistogramBinner.half_counts`); the reduce
runs the core's own divergence code on them (`window_pair_divergences`, `report_from_pairs`), so
the service and the core give the same numbers for the same rows.

Scratch (object store; removed after the reduce or on failure/cancel)::

    operations/<op>/fit.json                      binner, partition indexes, window rows
    operations/<op>/windows/reference-00003.npy   window 3's counts [2 halves (1 without floor), T] int64
"""

from __future__ import annotations

import io
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from crossadapt.models.spec import FeatureSpec
from crossadapt.transfer.drift.detector import DriftConfig, DriftReport, report_from_pairs, window_pair_divergences
from crossadapt.transfer.drift.histogram import HistogramBinner, window_bounds
from crossadapt.transfer.online.replay import ReplayConfig, replay_ratio
from services.common.errors import InvalidArgumentError, NotFoundError
from services.common.model_io import dataset_feature_spec
from services.common.operations import OperationStore
from services.common.storage import DatasetStore
from services.common.checks import checked_name
from services.common.storage.objects import ObjectNotFoundError
from services.common.storage.dataset_rows import PartitionIndex, read_range, scan

MAX_WINDOWS = 10_000  # reference windows are tasks
DEFAULT_LIVE_WINDOW_ROWS = 100_000
Source = Literal["reference", "stream"]
ProgressFn = Callable[[float], None]


# ---- the config --------------------------------------------------------------------------------
class DriftSettings(BaseModel):
    """The request's DriftConfig resolved: the core replay config (thresholds, k, drift) and window rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replay: ReplayConfig
    window_rows: int = 0  # 0: the stream's rows / windows (ComputeDrift)

    @property
    def drift(self) -> DriftConfig:
        return self.replay.drift

    @property
    def corrected(self) -> bool:
        return self.drift.noise_floor != "none"

    def ratio(self, shift: float) -> float:
        r = self.replay
        return replay_ratio(shift, r.theta_low, r.theta_high, r.max_ratio)


def drift_settings(fields: dict[str, Any]) -> DriftSettings:
    """The request's DriftConfig (JSON form, unset fields absent) → settings; bad values name `config.<field>`."""
    window_rows = int(fields.get("window_rows", 0))
    if window_rows < 0:
        raise InvalidArgumentError(f"window_rows must be >= 0, got {window_rows}", field="config.window_rows")
    drift = {
        "metric": fields.get("metric") or "js",
        "windows": fields.get("windows") or 10,
        "bins": fields.get("bins") or 50,
        "binning": fields.get("binning") or "quantile",
        "noise_floor": fields.get("noise_floor") or "crossed_halves",
        "kl_epsilon": fields.get("kl_epsilon") or 1e-6,
        "floor_runs": fields.get("floor_runs") or 16,
    }
    if drift["windows"] > MAX_WINDOWS:
        raise InvalidArgumentError(f"windows must be <= {MAX_WINDOWS}, got {drift['windows']}", field="config.windows")
    replay = {"theta_low": fields.get("low", 0.01), "theta_high": fields.get("high", 0.05),
              "max_ratio": fields.get("max_replay", 0.1)}
    names = {"theta_low": "low", "theta_high": "high", "max_ratio": "max_replay"}
    for key, value in replay.items():
        if not math.isfinite(float(value)):
            raise InvalidArgumentError(f"{names[key]} must be a finite number, got {value}", field=f"config.{names[key]}")
    try:
        config = DriftConfig(**drift)
    except ValidationError as exc:
        name = str(exc.errors()[0]["loc"][0])
        raise InvalidArgumentError(f"{name}: {exc.errors()[0]['msg']} (got {drift.get(name)!r})",
                                   field=f"config.{name}") from None
    try:
        core = ReplayConfig(**replay, rolling=True, window_rows=max(window_rows, 2), drift=config)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = names.get(str(first["loc"][0]) if first["loc"] else "", "high")
        raise InvalidArgumentError(f"{first['msg']}", field=f"config.{name}") from None
    return DriftSettings(replay=core, window_rows=window_rows)


def settings_message_fields(settings: DriftSettings) -> dict[str, Any]:
    """The resolved settings in DriftConfig's JSON form (for GetDrift and comparisons)."""
    d, r = settings.drift, settings.replay
    return {"metric": d.metric, "windows": d.windows, "bins": d.bins, "low": r.theta_low, "high": r.theta_high,
            "max_replay": r.max_ratio, "window_rows": str(settings.window_rows), "binning": d.binning,
            "noise_floor": d.noise_floor, "kl_epsilon": d.kl_epsilon, "floor_runs": d.floor_runs}


def dataset_spec(datasets: DatasetStore, name: str, field: str) -> tuple[FeatureSpec, str]:
    checked_name(name, f"{field}.name")
    try:
        return dataset_feature_spec(datasets, name)
    except NotFoundError as exc:
        raise NotFoundError(exc.message, field=field) from None


def check_same_schema(reference: tuple[FeatureSpec, str], other: tuple[FeatureSpec, str], what: str, field: str) -> None:
    """`other` must be measurable on the reference's bins: same features, same vocabulary."""
    if other[0] != reference[0]:
        raise InvalidArgumentError(f"{what} has another feature spec than the reference", field=field)
    if reference[1] and other[1] and reference[1] != other[1]:
        raise InvalidArgumentError(
            f"{what} was encoded with vocabulary {other[1][:12]}…, the reference with {reference[1][:12]}…", field=field)


# ---- the plan ------------------------------------------------------------------------------------
class DriftPlan(BaseModel):
    """Everything the tasks need, fixed when the operation starts (stored in the operation record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: str
    reference: str
    stream: str = ""
    settings: DriftSettings
    feature_spec: FeatureSpec

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.feature_spec.categorical] + list(self.feature_spec.numerical)

    def initial_units(self) -> list[str]:
        """Progress units known at Start (the stream's windows are counted by `fit`)."""
        windows = self.settings.drift.windows
        return ["fit", *(window_unit("reference", w) for w in range(windows)),
                *(window_unit("stream", w) for w in range(windows if self.stream else 0)), "reduce"]


def window_unit(source: Source, window: int) -> str:
    return f"{source}:{window:05d}"


def plan_drift(datasets: DatasetStore, *, operation_id: str, reference: str, stream: str, settings: DriftSettings,
               positions: tuple[bool, bool] = (False, False)) -> DriftPlan:
    """Validate a request before any worker runs; errors name the request field at fault."""
    if positions[0]:
        raise InvalidArgumentError("the reference is read whole; a start position is not supported",
                                   field="reference.position")
    if positions[1]:
        raise InvalidArgumentError("the stream is read whole; a start position is not supported",
                                   field="stream.position")
    ref = dataset_spec(datasets, reference, "reference")
    if not ref[0].categorical and not ref[0].numerical:
        raise InvalidArgumentError(f"dataset {reference!r} has no features to measure", field="reference")
    if stream:
        check_same_schema(ref, dataset_spec(datasets, stream, "stream"), f"stream {stream!r}", "stream")
    return DriftPlan(operation_id=operation_id, reference=reference, stream=stream, settings=settings,
                     feature_spec=ref[0])


# ---- fit -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftContext:
    """The stores a step works on (one per worker process)."""

    datasets: DatasetStore
    operations: OperationStore


class NotReadyError(Exception):
    """A step found an earlier step's output missing (a duplicate delivery fired the chord early): retry soon."""


class FitResult(BaseModel):
    """What `fit` found: the shared bins, where the rows are, how the stream is cut."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_sizes: list[int]
    numerical_edges: list[list[float]]
    feature_names: list[str]
    reference: PartitionIndex
    stream: PartitionIndex | None = None
    window_rows: int = 0  # stream window rows (resolved)
    stream_windows: int = 0

    def binner(self) -> HistogramBinner:
        return HistogramBinner(self.vocab_sizes, [np.asarray(e) for e in self.numerical_edges], self.feature_names)

    def bounds(self, source: Source, windows: int) -> np.ndarray:
        """[W + 1] global row bounds of the source's windows."""
        if source == "reference":
            return window_bounds(self.reference.total, windows)
        return np.arange(self.stream_windows + 1, dtype=np.int64) * self.window_rows


def _scratch(plan: DriftPlan, *parts: str) -> str:
    return "/".join(("operations", plan.operation_id, *parts))


def _core(call: Callable[[], Any], field: str, what: str) -> Any:
    """The core refuses bad data with ValueError (±inf, ids outside the vocabulary, too few rows)."""
    try:
        return call()
    except ValueError as exc:
        raise InvalidArgumentError(f"{what}: {exc}", field=field) from exc


def fit(ctx: DriftContext, plan: DriftPlan) -> FitResult:
    """Bins on the reference's pooled values (skipped if stored); the stream's window count."""
    stored = load_fit(ctx, plan)
    if stored is not None:
        return stored
    settings, spec = plan.settings, plan.feature_spec
    columns, reference = scan(ctx.datasets, plan.reference, spec, ("numerical",))
    drift = settings.drift
    rows = reference.total
    if rows < drift.windows * (2 if settings.corrected else 1):
        need = "2 rows per window for the noise floor" if settings.corrected else "1 row per window"
        raise InvalidArgumentError(f"reference {plan.reference!r} has {rows} rows: {drift.windows} windows need {need}",
                                   field="config.windows")
    numerical = columns["numerical"]
    binner = _core(lambda: HistogramBinner.fit(
        numerical if numerical is not None and numerical.shape[1] else None,
        [f.vocab_size for f in spec.categorical], bins=drift.bins, binning=drift.binning,
        feature_names=plan.feature_names), "reference", f"reference {plan.reference!r}")
    stream, window_rows, stream_windows = None, 0, 0
    if plan.stream:
        _, stream = scan(ctx.datasets, plan.stream, spec, ())
        window_rows = settings.window_rows or stream.total // drift.windows
        if settings.corrected and 0 < window_rows < 2:
            raise InvalidArgumentError(f"stream windows of {window_rows} row(s) cannot be split in halves for the "
                                       "noise floor", field="config.window_rows")
        stream_windows = stream.total // window_rows if window_rows else 0
    result = FitResult(vocab_sizes=binner.vocab_sizes, numerical_edges=[e.tolist() for e in binner.numerical_edges],
                       feature_names=binner.feature_names, reference=reference, stream=stream,
                       window_rows=window_rows, stream_windows=stream_windows)
    ctx.datasets.objects.put_bytes(_scratch(plan, "fit.json"), result.model_dump_json().encode())
    return result


def load_fit(ctx: DriftContext, plan: DriftPlan) -> FitResult | None:
    try:
        return FitResult.model_validate_json(ctx.datasets.objects.get_bytes(_scratch(plan, "fit.json")))
    except ObjectNotFoundError:
        return None


# ---- one window -------------------------------------------------------------------------------------
def _window_key(plan: DriftPlan, source: Source, window: int) -> str:
    return _scratch(plan, "windows", f"{source}-{window:05d}.npy")


def window_counts(binner: HistogramBinner, arrays: Any, settings: DriftSettings, first_row: int = 0) -> np.ndarray:
    """One window's counts [2 halves, T] (noise floor) or [1, T], as measure_drift / RollingDrift count it."""
    categorical = arrays.categorical if arrays.num_categorical else None
    numerical = arrays.numerical if arrays.num_numerical else None
    bounds = np.array([0, len(arrays)])
    if settings.corrected:
        return binner.half_counts(categorical, numerical, bounds, runs=settings.drift.floor_runs)[0]
    return binner.counts(categorical, numerical, bounds)  # [1, T]


def count_window(ctx: DriftContext, plan: DriftPlan, source: Source, window: int, progress: ProgressFn) -> int:
    """Map: histogram one window of the reference or the stream → scratch; returns its rows (skipped if done)."""
    key = _window_key(plan, source, window)
    fitted = load_fit(ctx, plan)
    if fitted is None:
        raise NotReadyError("the bins are not fitted yet")
    bounds = fitted.bounds(source, plan.settings.drift.windows)
    lo, hi = int(bounds[window]), int(bounds[window + 1])
    if ctx.datasets.objects.exists(key):
        return hi - lo
    index = fitted.reference if source == "reference" else fitted.stream
    assert index is not None
    name = plan.reference if source == "reference" else plan.stream
    arrays = read_range(ctx.datasets, index, plan.feature_spec, lo, hi)
    progress(0.5)
    counts = _core(lambda: window_counts(fitted.binner(), arrays, plan.settings),
                   source, f"{source} {name!r} window {window} (rows {lo}..{hi - 1})")
    buffer = io.BytesIO()
    np.save(buffer, counts, allow_pickle=False)
    ctx.datasets.objects.put_bytes(key, buffer.getvalue())
    progress(1.0)
    return hi - lo


def _load_counts(ctx: DriftContext, plan: DriftPlan, source: Source, window: int) -> np.ndarray:
    try:
        raw = ctx.datasets.objects.get_bytes(_window_key(plan, source, window))
    except ObjectNotFoundError:
        raise NotReadyError(f"{source} window {window} is not counted yet") from None
    return np.load(io.BytesIO(raw), allow_pickle=False)


# ---- reduce -----------------------------------------------------------------------------------------
def reference_report(binner: HistogramBinner, counts: np.ndarray, rows: int, settings: DriftSettings) -> DriftReport:
    """measure_drift's report from the windows' counts [n, 2 or 1, T] (the same code on the same counts)."""
    drift = settings.drift
    window_rows = counts[:, :, : int(binner.sizes[0])].sum(axis=(1, 2)).astype(np.float64)[:, None]
    raw = np.empty((drift.windows - 1, len(binner.sizes)))
    floor = np.empty_like(raw) if settings.corrected else None
    for group in binner.feature_groups():
        columns = binner.slot_range(group)
        if floor is not None:
            raw[:, group.start:group.stop], floor[:, group.start:group.stop] = window_pair_divergences(
                binner, counts[:, :, columns], drift.metric, drift.kl_epsilon, group)
        else:
            probs = counts[:, 0, columns] / window_rows
            raw[:, group.start:group.stop] = binner.divergence(probs[:-1], probs[1:], drift.metric, drift.kl_epsilon,
                                                               group)
    return report_from_pairs(raw, binner, drift.metric, rows, floor=floor, noise_floor=drift.noise_floor)


class RollingPairs:
    """Pairs of consecutive stream windows, as RollingDrift closes them (the last n - 1 kept)."""

    def __init__(self, binner: HistogramBinner, settings: DriftSettings) -> None:
        self.binner, self.settings = binner, settings
        keep = settings.drift.windows - 1
        self.raw: deque[np.ndarray] = deque(maxlen=keep)
        self.floor: deque[np.ndarray] = deque(maxlen=keep)
        self.pairs: deque[np.ndarray] = deque(maxlen=keep)
        self.previous: np.ndarray | None = None

    def close(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
        """Add the next window's counts; (raw, floor, reported) [F] of its pair with the previous, if any."""
        d = self.settings.drift
        previous, self.previous = self.previous, counts
        if previous is None:
            return None
        if self.settings.corrected:
            pair = np.stack([previous, counts])  # [2 windows, 2 halves, T]
            raw, floor = (x[0] for x in window_pair_divergences(self.binner, pair, d.metric, d.kl_epsilon))
            reported = np.maximum(raw - floor, 0.0)
            self.floor.append(floor)
        else:
            raw = self.binner.divergence(_distribution(previous, self.binner), _distribution(counts, self.binner),
                                         d.metric, d.kl_epsilon)[0]
            floor, reported = None, raw
        self.raw.append(raw)
        self.pairs.append(reported)
        return raw, floor, reported

    @property
    def shift(self) -> float:
        return float(np.mean(self.pairs))

    def report(self, window_rows: int) -> DriftReport | None:
        """RollingDrift.report(): the per-feature table of the recent pairs."""
        if not self.pairs:
            return None
        rows = (len(self.pairs) + 1) * window_rows
        d = self.settings.drift
        if self.settings.corrected:
            return report_from_pairs(np.stack(self.raw), self.binner, d.metric, rows, floor=np.stack(self.floor),
                                     noise_floor=d.noise_floor)
        return report_from_pairs(np.stack(self.pairs), self.binner, d.metric, rows)


def _distribution(counts: np.ndarray, binner: HistogramBinner) -> np.ndarray:
    """A window's [T] distribution (each feature's slots sum to 1), as RollingDrift divides its counts."""
    whole = counts.sum(axis=0)
    rows = float(whole[: int(binner.sizes[0])].sum())
    return whole / rows


def _by_feature(names: list[str], values: np.ndarray | None) -> dict[str, float] | None:
    return None if values is None else {name: float(v) for name, v in zip(names, values, strict=True)}


def reduce(ctx: DriftContext, plan: DriftPlan) -> dict[str, Any]:
    """Reduce: the reference report and ratio, then the stream window by window → the operation's details."""
    fitted = load_fit(ctx, plan)
    if fitted is None:
        raise NotReadyError("the bins are not fitted yet")
    binner, settings = fitted.binner(), plan.settings
    drift = settings.drift
    counts = np.stack([_load_counts(ctx, plan, "reference", w) for w in range(drift.windows)])
    reference = reference_report(binner, counts, fitted.reference.total, settings)
    details: dict[str, Any] = {
        "metric": drift.metric, "windows": drift.windows, "noise_floor": drift.noise_floor,
        "theta_low": settings.replay.theta_low, "theta_high": settings.replay.theta_high,
        "max_replay": settings.replay.max_ratio,
        "reference": {"dataset": plan.reference, "rows": fitted.reference.total, "shift": reference.shift,
                      "replay_ratio": settings.ratio(reference.shift), "report": reference.model_dump(mode="json")},
        "shift": reference.shift, "replay_ratio": settings.ratio(reference.shift), "source": "reference",
    }
    if not plan.stream or fitted.stream is None:
        return details
    rolling = RollingPairs(binner, settings)
    ratio, shift = settings.ratio(reference.shift), None
    per_window = []
    names = binner.feature_names
    for window in range(fitted.stream_windows):
        measured = rolling.close(_load_counts(ctx, plan, "stream", window))
        entry: dict[str, Any] = {"window": window, "first_row": window * fitted.window_rows,
                                 "rows": fitted.window_rows}
        if measured is not None:
            raw, floor, reported = measured
            shift = rolling.shift
            ratio = settings.ratio(shift)
            entry.update(divergence=_by_feature(names, reported), raw=_by_feature(names, raw),
                         floor=_by_feature(names, floor))
        entry.update(shift=shift, replay_ratio=ratio)
        per_window.append(entry)
    report = rolling.report(fitted.window_rows)
    details["stream"] = {
        "dataset": plan.stream, "rows": fitted.stream.total, "window_rows": fitted.window_rows,
        "windows": fitted.stream_windows, "unmeasured_rows": fitted.stream.total - fitted.stream_windows *
        fitted.window_rows, "per_window": per_window, "shift": shift, "replay_ratio": ratio,
        "report": None if report is None else report.model_dump(mode="json"),
    }
    if shift is not None:
        details.update(shift=shift, replay_ratio=ratio, source="stream")
    return details


def cleanup(ctx: DriftContext, plan: DriftPlan) -> None:
    """Drop the operation's scratch objects (after the reduce, or after a failure or cancel)."""
    ctx.datasets.objects.delete_prefix(_scratch(plan))


def plan_from_record(params: dict[str, Any]) -> DriftPlan:
    return DriftPlan.model_validate(params["plan"])
