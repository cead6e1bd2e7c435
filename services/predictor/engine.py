"""The predictor's state and operations, independent of the transports (KServe REST/gRPC, admin gRPC).

    engine = PredictorEngine(settings, loader, datasets)  # loads both arms
    result = await engine.score(columns, request_id)       # route, encode, score; keeping the rows and
                                                           # queueing their shadow work follow the response
    engine.set_split(Split(0.25, "salt")); await engine.swap(STUDENT, CheckpointSpec("ctr/student"))
    engine.add_labels(row_ids, labels); figures = await engine.figures(window_seconds=0)

Everything that mutates state runs on the event loop thread; model forwards of large batches,
shadow scoring, checkpoint loads, figures and exposure writes run in worker threads on immutable
inputs (the arm pair and the split are replaced, never changed in place).

A request's answer is all that stands between it and its response: keeping its rows in the score
log, counting them and queueing their shadow work (`record`) is deferred to the event loop's next
turn (`record_answered`), which comes after the response was handed to the transport and before the
loop reads any request that arrived later. Whatever reads the kept rows (labels, figures, flushes,
shutdown) first records what is still deferred, so no row is lost or missed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, replace

import numpy as np

from services.common.errors import FailedPreconditionError, InvalidArgumentError
from services.common.storage import DatasetStore
from services.predictor import prometheus
from services.predictor.arm_metrics import WindowFigures, window_figures
from services.predictor.arms import ARM_NAMES, STUDENT, TEACHER, ArmLoader, ArmPair, EncodedBatch, LoadedArm, other
from services.predictor.exposure import exposure_table, write_exposures
from services.predictor.features import RequestColumns, RequestSchema
from services.predictor.routing import BUCKETS, Split
from services.predictor.score_log import ScoreLog
from services.predictor.settings import CheckpointSpec, PredictorSettings
from services.predictor.shadow import ShadowJob, ShadowScorer, ShadowScores

log = logging.getLogger(__name__)
SHADOW_PERMUTATION = 7919  # a multiplier coprime to 10000: the shadow sample's buckets are a shuffle of the split's
MAX_FEEDBACK_ROWS = 1_000_000


@dataclass(frozen=True)
class ScoredRows:
    """A request's answer, computed without touching shared state (see `PredictorEngine.compute`)."""

    request_id: str
    columns: RequestColumns
    pair: ArmPair
    buckets: np.ndarray
    served: np.ndarray  # [B] int8 arm codes
    probabilities: np.ndarray  # [B] float32
    unknown: np.ndarray  # [B, 2] unknown values per arm (0 where the arm did not encode the rows)
    encoded: dict[int, EncodedBatch]  # arm -> the model input of every row, for the arms encoded so far
    scored_at: float  # unix seconds, when the rows were scored


@dataclass(frozen=True)
class FlushResult:
    rows: int
    partitions: list[str]


class PredictorEngine:
    """Two arms, a split, kept scores, shadow work, labels, figures and the exposure log."""

    def __init__(self, settings: PredictorSettings, loader: ArmLoader, datasets: DatasetStore) -> None:
        self.settings = settings
        self.loader = loader
        self.datasets = datasets
        self.model = settings.model_name
        self.pair = ArmPair(teacher=loader.load(TEACHER, settings.teacher_checkpoint),
                            student=loader.load(STUDENT, settings.student_checkpoint))
        self.schema: RequestSchema = self.pair.schema(settings.cohort_key, settings.row_id_field,
                                                      settings.max_batch_rows)
        self.split = Split(settings.student_weight, settings.salt)
        self.score_log = ScoreLog(settings.kept_rows)
        self.shadow = ShadowScorer(self.score_log, max_pending_rows=settings.shadow_queue_rows,
                                   # Batches of shadow_batch_rows stay on the loop (up to inline_rows): a
                                   # worker thread would trade the GIL with the loop at every switch interval.
                                   batch_rows=settings.shadow_batch_rows,
                                   inline_rows=settings.inline_rows, on_scored=self._shadow_scored,
                                   on_dropped=self._shadow_dropped, min_rows=settings.shadow_batch_rows,
                                   max_delay_s=settings.shadow_max_delay_s, chunk_jobs=settings.shadow_chunk_jobs)
        self.shadow_dropped_rows = 0
        self.last_swap = time.time()
        self.checkpoint_of_generation = {a.generation: a.ref for a in (self.pair.teacher, self.pair.student)}
        self.latest_figures: WindowFigures | None = None
        self._swap_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._unwritten: list[tuple[object, float, int]] = []  # exposure tables whose write failed, retried next flush
        self._shadow_threshold = int(round(settings.shadow_share * BUCKETS))
        self._tasks: list[asyncio.Future] = []
        self._early_flush: asyncio.Future | None = None
        self._figures_state: tuple[int, int, int] | None = None
        self._refreshes_skipped = 0
        self._served_counters = {a: prometheus.ROWS.labels(self.model, n, "served") for a, n in ARM_NAMES.items()}
        self._shadow_counters = {a: prometheus.ROWS.labels(self.model, n, "shadow") for a, n in ARM_NAMES.items()}
        self._id_prefix = uuid.uuid4().hex[:12]  # generated request ids: unique per process, cheap per request
        self._request_numbers = itertools.count()
        self._row_suffixes = np.array([f"/{row}" for row in range(settings.max_batch_rows)], dtype=object)
        self._row_positions = np.arange(settings.max_batch_rows, dtype=np.int64)
        self._row_positions.flags.writeable = False
        self._unrecorded: list[ScoredRows] = []  # answered requests whose rows are not kept yet (see `score`)

    # ---- scoring ------------------------------------------------------------------------------
    def compute(self, columns: RequestColumns, request_id: str | None) -> ScoredRows:
        """Route and score a request's rows with the current arms (reads shared state, changes none)."""
        pair, split = self.pair, self.split
        buckets, to_student = split.assign(columns.cohort)
        served = np.where(to_student, STUDENT, TEACHER).astype(np.int8)
        probabilities = np.empty(columns.rows, dtype=np.float32)
        unknown = np.zeros((columns.rows, 2), dtype=np.int32)
        encoded: dict[int, EncodedBatch] = {}
        student_rows = int(np.count_nonzero(to_student))
        for arm, count in ((TEACHER, columns.rows - student_rows), (STUDENT, student_rows)):
            if not count:
                continue
            loaded = pair.arm(arm)
            batch = self._encoded(loaded, pair, columns, encoded)
            if count == columns.rows:  # one arm serves every row (always so at batch 1)
                probabilities[:] = loaded.score(batch)
            else:
                rows = np.flatnonzero(served == arm)
                probabilities[rows] = loaded.score(batch.rows(rows))
        for arm, batch in encoded.items():
            unknown[:, arm - 1] = batch.unknown
        return ScoredRows(request_id or f"{self._id_prefix}-{next(self._request_numbers)}", columns, pair, buckets,
                          served, probabilities, unknown, encoded, time.time())

    @staticmethod
    def _encoded(loaded: LoadedArm, pair: ArmPair, columns: RequestColumns,
                 encoded: dict[int, EncodedBatch]) -> EncodedBatch:
        """The arm's input for all rows, shared with the other arm when both use the same encoder."""
        if loaded.arm not in encoded:
            twin = pair.arm(other(loaded.arm))
            if twin.arm in encoded and twin.encoder is loaded.encoder:
                encoded[loaded.arm] = encoded[twin.arm]
            else:
                encoded[loaded.arm] = loaded.encoder.encode(columns)
            if twin.encoder is loaded.encoder:
                encoded[twin.arm] = encoded[loaded.arm]
        return encoded[loaded.arm]

    def record(self, scored: ScoredRows) -> None:
        """Keep the rows, count them and queue their shadow scores (on the event loop)."""
        columns, served, pair = scored.columns, scored.served, scored.pair
        if columns.row_ids is not None:
            row_ids = np.array(columns.row_ids.to_pylist(), dtype=object)
        else:
            row_ids = np.add(scored.request_id, self._row_suffixes[: columns.rows])  # "<request id>/<row>"
        shadow = (scored.buckets.astype(np.int64) * SHADOW_PERMUTATION % BUCKETS) < self._shadow_threshold
        seqs = self.score_log.append(
            row_ids=row_ids, request_id=scored.request_id, now=scored.scored_at, served=served, bucket=scored.buckets,
            primary_scores=scored.probabilities, generations=(pair.teacher.generation, pair.student.generation),
            unknown=scored.unknown, shadow_pending=shadow)
        jobs = []
        student_rows = int(np.count_nonzero(served == STUDENT))
        shadow_rows = int(np.count_nonzero(shadow))
        for arm, served_rows in ((TEACHER, columns.rows - student_rows), (STUDENT, student_rows)):
            if served_rows:
                self._served_counters[arm].inc(served_rows)
                loaded = pair.arm(arm)
                if scored.unknown[:, arm - 1].any():
                    for field, count in loaded.encoder.unknown_by_field(scored.encoded[arm], served == arm).items():
                        prometheus.UNKNOWN_VALUES.labels(self.model, loaded.name, field).inc(count)
            if not shadow_rows or served_rows == columns.rows:  # no row of the other arm to shadow-score
                continue
            batch = scored.encoded.get(arm)
            if shadow_rows == columns.rows and not served_rows:  # every row, all served by the other arm
                jobs.append(ShadowJob(pair.arm(arm), seqs, columns, self._all_rows(columns.rows), batch))
                continue
            rows = np.flatnonzero(shadow & (served == other(arm)))
            if len(rows):
                jobs.append(ShadowJob(pair.arm(arm), seqs[rows], columns, rows,
                                      None if batch is None else batch.rows(rows)))
        self.shadow.submit(jobs)
        if self.score_log.pending_flush >= self.settings.flush_rows and (self._early_flush is None
                                                                         or self._early_flush.done()):
            self._early_flush = asyncio.ensure_future(self.flush())  # kept: a task nobody holds may be collected

    def _all_rows(self, rows: int) -> np.ndarray:
        """``[rows]`` positions 0..rows-1 (read-only, shared)."""
        return self._row_positions[:rows]

    async def score(self, columns: RequestColumns, request_id: str | None) -> ScoredRows:
        """`compute` (in a worker thread for large batches, so the loop keeps serving), then `record` once the
        response is out: at the loop's next turn (`record_answered`)."""
        if columns.rows <= self.settings.inline_rows:
            scored = self.compute(columns, request_id)
        else:
            scored = await asyncio.to_thread(self.compute, columns, request_id)
        if not self._unrecorded:
            asyncio.get_running_loop().call_soon(self.record_answered)
        self._unrecorded.append(scored)
        return scored

    def record_answered(self) -> None:
        """`record` the answered requests not recorded yet, in the order they were scored (on the event loop).

        Runs at the loop's next turn after a request is answered; whatever reads the kept rows calls it first."""
        answered, self._unrecorded = self._unrecorded, []
        for scored in answered:
            try:
                self.record(scored)
            except Exception:  # noqa: BLE001 - a bug: the other requests' rows are still kept
                log.exception("keeping a request's rows failed", extra={"request_id": scored.request_id,
                                                                        "rows": scored.columns.rows})

    def _shadow_scored(self, result: ShadowScores) -> None:
        self._shadow_counters[result.arm.arm].inc(len(result.seqs))

    def _shadow_dropped(self, rows: int) -> None:
        self.shadow_dropped_rows += rows
        prometheus.SHADOW_DROPPED.labels(self.model).inc(rows)

    # ---- admin ----------------------------------------------------------------------------------
    def set_split(self, split: Split) -> Split:
        self.split = split
        log.info("split set", extra={"student_weight": split.student_weight, "salt": split.salt})
        return split

    async def swap(self, arm: int, checkpoint: CheckpointSpec) -> LoadedArm:
        """Load a checkpoint into `arm` off the loop, then switch to it in one assignment."""
        if arm not in ARM_NAMES:
            raise InvalidArgumentError("arm must be ARM_TEACHER or ARM_STUDENT", field="arm")
        async with self._swap_lock:
            loaded = await asyncio.to_thread(self.loader.load, arm, checkpoint)
            try:
                self._check_fields(loaded)
            except FailedPreconditionError:
                self.loader.keep_only(self.pair)  # release the refused arm's encoder
                raise
            self.checkpoint_of_generation[loaded.generation] = loaded.ref
            self.pair = self.pair.with_arm(loaded)
            # Null/NaN means "missing" for the fields the arms now have indicators for (the fields stay).
            self.schema = replace(self.schema, missing_numerical=self.pair.missing_numerical())
            self.last_swap = time.time()
            self.loader.keep_only(self.pair)
            prometheus.SWAPS.labels(self.model, loaded.name).inc()
            log.info("arm swapped", extra={"arm": loaded.name, "checkpoint": loaded.ref,
                                           "generation": loaded.generation})
            return loaded

    def _check_fields(self, loaded: LoadedArm) -> None:
        """A new arm may only read fields the requests already carry, with the same kind."""
        for field in loaded.encoder.categorical:
            if field not in self.schema.categorical:
                raise FailedPreconditionError(f"{loaded.ref} reads categorical field {field!r}, which the requests "
                                              "do not carry", field=field)
        for field in loaded.encoder.numerical:
            if field not in self.schema.numerical:
                raise FailedPreconditionError(f"{loaded.ref} reads numerical field {field!r}, which the requests "
                                              "do not carry", field=field)

    def add_labels(self, row_ids: list[str], labels: list[float] | np.ndarray) -> tuple[int, int]:
        """Join labels (0 or 1) to kept rows; returns (matched, unknown)."""
        if len(row_ids) != len(labels):
            raise InvalidArgumentError(f"{len(row_ids)} row ids but {len(labels)} labels", field="labels")
        if len(row_ids) > MAX_FEEDBACK_ROWS:
            raise InvalidArgumentError(f"at most {MAX_FEEDBACK_ROWS} labels per call", field="row_ids")
        values = np.asarray(labels, dtype=np.float32)
        if len(values) and not np.isin(values, (0.0, 1.0)).all():
            raise InvalidArgumentError("labels must be 0 or 1", field="labels")
        if not all(isinstance(r, str) for r in row_ids):
            raise InvalidArgumentError("row ids must be strings", field="row_ids")
        self.record_answered()
        matched, unknown = self.score_log.add_labels(list(row_ids), values)
        prometheus.FEEDBACK.labels(self.model, "matched").inc(matched)
        prometheus.FEEDBACK.labels(self.model, "unknown").inc(unknown)
        return matched, unknown

    def window_start(self, window_seconds: float) -> float:
        if not (window_seconds >= 0 and np.isfinite(window_seconds)):
            raise InvalidArgumentError(f"window_seconds must be >= 0, got {window_seconds}", field="window_seconds")
        if window_seconds == 0:
            return self.last_swap
        return max(time.time() - window_seconds, self.last_swap)

    async def figures(self, window_seconds: float) -> WindowFigures:
        """Per-arm figures and paired intervals of the rows scored since `window_start(window_seconds)`."""
        start = self.window_start(window_seconds)
        self.record_answered()
        rows = self.score_log.since(start)
        pair, settings = self.pair, self.settings
        return await asyncio.to_thread(
            window_figures, rows, window_start=start,
            generations={TEACHER: pair.teacher.generation, STUDENT: pair.student.generation},
            checkpoints={TEACHER: pair.teacher.ref, STUDENT: pair.student.ref},
            replicates=settings.bootstrap_replicates, level=settings.confidence_level,
            max_rows=settings.bootstrap_max_rows, seed=settings.seed)

    # ---- exposure log ---------------------------------------------------------------------------
    @property
    def exposure_dataset(self) -> str:
        return self.settings.exposure_dataset_name

    async def flush(self, drain_shadow: bool = True) -> FlushResult:
        """Write the complete kept rows not written yet (and any earlier failed write) to the store.

        First the shadow work queued so far is scored (`drain_shadow`), so every row served before the
        call is complete and written, not held back by the shadow worker's coalescing wait."""
        self.record_answered()  # the rows answered so far, and their shadow work
        if drain_shadow and self._tasks:
            await self.shadow.drain(self.settings.shadow_max_delay_s + 30)
        async with self._flush_lock:
            lost = self.score_log.lost_before_flush
            if lost:
                prometheus.EXPOSURES.labels(self.model, "lost").inc(lost)
                self.score_log.lost_before_flush = 0
            rows = self.score_log.take_complete()
            if len(rows):
                self._unwritten.append((exposure_table(rows, dict(self.checkpoint_of_generation)),
                                        float(rows.scored_at[0]), len(rows)))
            written, partitions = 0, []
            while self._unwritten:
                table, first, count = self._unwritten[0]
                try:
                    partitions.append(await asyncio.to_thread(write_exposures, self.datasets, self.exposure_dataset,
                                                              table, first))
                except Exception:  # keep the table for the next flush; a store outage must not lose the log
                    log.exception("exposure log write failed; retrying at the next flush", extra={"rows": count})
                    if len(self._unwritten) > 16:
                        _, _, dropped = self._unwritten.pop(0)
                        prometheus.EXPOSURES.labels(self.model, "lost").inc(dropped)
                    break
                self._unwritten.pop(0)
                written += count
                prometheus.EXPOSURES.labels(self.model, "written").inc(count)
            return FlushResult(written, partitions)

    # ---- background -----------------------------------------------------------------------------
    def start_background(self) -> None:
        """Start the shadow worker, periodic flushes and figure refreshes (on the running loop)."""
        self._tasks = [asyncio.ensure_future(self.shadow.run()),
                       asyncio.ensure_future(self._every(self.settings.flush_interval_s, self.flush)),
                       asyncio.ensure_future(self._every(self.settings.metrics_refresh_s, self._refresh_figures))]

    async def _every(self, period: float, action) -> None:  # noqa: ANN001 - an async callable
        while True:
            await asyncio.sleep(period)
            try:
                await action()
            except Exception:  # noqa: BLE001 - a periodic task logs and keeps going
                log.exception("periodic task %s failed", getattr(action, "__name__", action))

    async def _refresh_figures(self) -> None:
        """Recompute the Prometheus figures if labels or arms changed (the bootstrap is the costly part)."""
        state = (self.score_log.label_updates, self.pair.teacher.generation, self.pair.student.generation)
        self._refreshes_skipped += 1
        if state == self._figures_state and self._refreshes_skipped < 6:
            return
        self.latest_figures = await self.figures(0)
        self._figures_state, self._refreshes_skipped = state, 0

    async def close(self, timeout: float) -> None:
        """Stop the periodic tasks, finish shadow work (up to `timeout`) and flush the exposure log."""
        shadow_task, *periodic = self._tasks or [None]
        for task in periodic:
            task.cancel()
        self.record_answered()
        if not await self.shadow.drain(timeout):
            log.warning("shadow work left at shutdown", extra={"rows": self.shadow.pending_rows})
            self.score_log.settle_all()
        if shadow_task is not None:
            shadow_task.cancel()
        result = await self.flush(drain_shadow=False)
        log.info("exposure log flushed at shutdown", extra={"rows": result.rows, "partitions": result.partitions})
