"""The co-distillation task without Celery: a stream of partitions through the core CoDistiller.

    run_codistillation(ctx, plan, report)
      start:  the newest student this operation published (its weights, its teacher's, the run state
              and the stream position inside it), else the request's student and teacher (and the
              student's saved optimiser state, e.g. the offline distiller's)
      stream: `model_io.read_split` from the position, in time order, cut into batches of `batch_size`
              rows across partition boundaries (`rebatch`; target 'conversion': of the clicked rows,
              kept before batching, so the batches are the in-process ones); each is checked and
              trained on (core CoDistiller: student every batch, teacher every τ, replayed rows at
              the drift-set ratio)
      every `checkpoint_every_seconds` seconds (default 60) or, if set, `checkpoint_every_batches` batches,
              whichever comes first
              (`checkpoint_due`): publish the teacher (next version of teacher_name), then
              the student (next version of student_name) with the run state, the position and the rows
              consumed per partition in its manifest; at the end of the stream the same, finished
      follow: at the end, wait for new partitions instead (until cancelled)

A restarted task resumes at the newest student's position: 0 rows skipped, at most one checkpoint
interval replayed, and the continuation is bit-for-bit the uninterrupted one. The run state inside every
checkpoint holds what the options beyond the paper carry along the stream too: the rolling Δ_shift
estimate (`drift.rolling`: its open and recent windows, rows seen, the ratio in force) and a collaborative
teacher's pending τ-window with the student's targets; the manifest and the operation's details show
their summary (`online_extras`).

Vocabulary growth (`grow_vocabulary`): a stream partition of a newer vocabulary version (its schema
records the version's spec, hash and number) is accepted; before the first batch holding its rows
both models' tables grow to that version (core `CoDistiller.grow_to`: new student rows from the
teacher's projected rows). Every checkpoint names the tables it has: its manifest's feature spec is
the model's own (grown) spec, its vocab_hash that version's hash and `extra.vocab_version` its number,
so a resumed run rebuilds the grown models from the manifest. It also carries that version's values
(`has_vocabulary`), read from the stream's stored vocabulary (`model_io.dataset_vocabulary`, written
with the stream by `write_split`), so a predictor serves a grown student from raw values: the values
the version added map to their grown rows. A stream stored without its vocabulary still trains; its
grown checkpoints then carry none (a warning says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from crossadapt.data.arrays import SplitArrays
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.spec import FeatureSpec
from crossadapt.training.evaluate import target_row_ids
from crossadapt.transfer.online.codistillation import CoDistiller, build_codistiller
from crossadapt.transfer.online.collaborative import CollaborativeTeacher
from crossadapt.transfer.online.replay import ReplayController
from services.common.checks import check_rows, read_rows
from services.common.errors import DataLossError, FailedPreconditionError, InvalidArgumentError
from services.common.model_io import (
    dataset_vocabulary,
    load_model,
    load_vocabulary,
    publish_model,
    read_split,
    schema_spec,
    schema_vocab_version,
)
from services.common.storage.checkpoints import CheckpointStore, PublishedCheckpoint
from services.common.storage.datasets import DatasetPosition
from services.common.training_state import OPTIMIZER_FILE, default_device, read_state, tensor_bytes
from services.online_codistiller.context import CoDistillerContext
from services.online_codistiller.plan import CoDistillationPlan, grows_from

log = logging.getLogger(__name__)
RUN_STATE_FILE = "training/codistillation.pt"
ReportFn = Callable[..., None]


@dataclass(frozen=True)
class TablesVersion:
    """The vocabulary version a model's tables (or a partition's ids) are of: rows per field, hash, number."""

    sizes: tuple[int, ...]
    vocab_hash: str
    version: int | None = None

    @classmethod
    def of(cls, spec: FeatureSpec, vocab_hash: str, version: int | None = None) -> TablesVersion:
        return cls(tuple(f.vocab_size for f in spec.categorical), vocab_hash, version)


@dataclass
class Checkpoint:
    """A published (student, teacher) pair of this operation and where in the stream it stands."""

    student: PublishedCheckpoint
    teacher_ref: str
    position: DatasetPosition | None
    rows_by_partition: dict[str, int]
    final: bool
    tables: TablesVersion

    @classmethod
    def of(cls, student: PublishedCheckpoint) -> Checkpoint:
        manifest = student.manifest
        extra = manifest.extra
        position = extra.get("position")
        return cls(student=student, teacher_ref=str(extra["teacher"]),
                   position=DatasetPosition.model_validate(position) if position else None,
                   rows_by_partition=dict(extra.get("rows_by_partition") or {}), final=bool(extra.get("final")),
                   tables=TablesVersion.of(manifest.feature_spec, manifest.vocab_hash, extra.get("vocab_version")))


def latest_checkpoint(checkpoints: CheckpointStore, plan: CoDistillationPlan) -> Checkpoint | None:
    """The newest student version published by this operation (versions of others are skipped)."""
    for version in reversed(checkpoints.versions(plan.student_name)):
        try:
            published = checkpoints.resolve(plan.student_name, version)
        except DataLossError:
            continue
        if published.manifest.extra.get("operation_id") == plan.operation_id:
            return Checkpoint.of(published)
    return None


def rebatch(reads: Iterable[tuple[SplitArrays, DatasetPosition]], size: int,
            keep: Callable[[SplitArrays], np.ndarray] | None = None,
            ) -> Iterator[tuple[SplitArrays, DatasetPosition, dict[str, int]]]:
    """Batches of `size` rows that run across partition boundaries, as the in-process stream does.

    `reads` are consecutive stream rows, each with the position just after its last row. `keep` (the
    ascending indices of the rows to train on, e.g. the clicked rows for target 'conversion') filters
    every read BEFORE batching, as the in-process co-distiller filters the whole stream before cutting
    it into batches; None keeps every row.

    Each batch comes with the position just after its last (kept) stream row and the stream rows per
    partition between the previous batch's position and its own (rows `keep` left out included). Batch
    boundaries depend only on where reading started, so a run resumed from a saved position forms
    exactly the batches the uninterrupted run formed from there (the left-out rows it reads again are
    left out again). The last batch may be shorter; it ends at the last read's position. Left-out rows
    after a full last batch stay unconsumed (the position stays at that batch's end).
    """
    parts: list[SplitArrays] = []
    counts: dict[str, int] = {}
    buffered = 0
    position: DatasetPosition | None = None
    for arrays, position in reads:
        partition, first_row = str(position.partition), position.row - len(arrays)
        rows = np.arange(len(arrays)) if keep is None else keep(arrays)
        counted = 0  # rows of this read already counted into a batch
        offset = 0
        while offset < len(rows):
            take = min(size - buffered, len(rows) - offset)
            lo, hi = int(rows[offset]), int(rows[offset + take - 1]) + 1
            parts.append(arrays.slice(lo, hi) if keep is None else arrays.take(rows[offset:offset + take]))
            offset += take
            buffered += take
            if buffered == size:
                counts[partition] = counts.get(partition, 0) + hi - counted
                counted = hi
                end = position.model_copy(update={"row": first_row + hi})
                yield SplitArrays.concat(parts), end, counts
                parts, counts, buffered = [], {}, 0
        if counted < len(arrays):
            counts[partition] = counts.get(partition, 0) + len(arrays) - counted
    if buffered and position is not None:
        yield SplitArrays.concat(parts), position, counts


@dataclass
class StreamRun:
    """The co-distiller over the stream, with the bookkeeping every checkpoint records."""

    ctx: CoDistillerContext
    plan: CoDistillationPlan
    distiller: CoDistiller
    report: ReportFn
    vocabulary: Vocabulary | None  # the values of the version the models' tables are of (None: unknown)
    position: DatasetPosition | None
    tables: TablesVersion  # the version the models' tables are of now (grown ones: a newer one)
    rows_by_partition: dict[str, int] = field(default_factory=dict)
    last: Checkpoint | None = None
    batches_since_checkpoint: int = 0
    checkpointed_at: float = field(default_factory=time.monotonic)  # the last checkpoint (or the run's start)
    # Where this task's time went: reading the stream, training on it, publishing checkpoints (and, set by
    # run_codistillation, loading the models and the replay pool); shown in each checkpoint's details.
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("start", "read", "train", "checkpoint"), 0.0))
    _partitions: list[str] = field(default_factory=list)
    _partition_tables: dict[str, TablesVersion] = field(default_factory=dict)

    # -- the stream --------------------------------------------------------------------------------

    def batches(self) -> Iterator[tuple[SplitArrays, DatasetPosition, dict[str, int]]]:
        """`batch_size`-row batches across partition boundaries (see `rebatch`) of the rows the target is
        defined on (target 'conversion': the clicked rows, kept before batching as in process)."""
        target = self.plan.settings.target
        keep = None if target == "click" else lambda arrays: target_row_ids(arrays, target)
        return rebatch(self._partition_batches(), self.plan.settings.optim.batch_size, keep)

    def _partition_batches(self) -> Iterator[tuple[SplitArrays, DatasetPosition]]:
        """The stream from the current position, one read batch at a time; schema or data faults name the partition."""
        plan = self.plan
        growing = plan.settings.online.grow_vocabulary
        stream = read_split(self.ctx.datasets, plan.stream, self.position, batch_rows=plan.settings.optim.batch_size,
                            spec=None if growing else plan.feature_spec)  # growing: each partition's own spec
        while True:
            try:
                arrays, position = next(stream)
                spec = self.partition_spec(str(position.partition)) if growing else plan.feature_spec
            except StopIteration:
                return
            except InvalidArgumentError as exc:  # a partition with another schema
                raise InvalidArgumentError(exc.message, field="stream") from None
            except pa.ArrowInvalid as exc:
                raise FailedPreconditionError(f"stream {plan.stream!r}: unreadable partition after "
                                              f"{self.position}: {exc}", field="stream") from exc
            check_rows(arrays, spec, f"stream partition {plan.stream}/{position.partition}")
            if plan.settings.target == "conversion" and arrays.conversion is None:
                raise InvalidArgumentError(f"target 'conversion': stream partition {plan.stream}/{position.partition} "
                                           "has no conversion column", field="stream")
            yield arrays, position

    def partition_spec(self, partition: str) -> FeatureSpec:
        """A growing stream's partition: its spec, if the models can grow to it (remembered with its version)."""
        plan = self.plan
        schema = self.ctx.datasets.footer(plan.stream, partition).schema.to_arrow_schema()
        spec, vocab_hash = schema_spec(schema, f"{plan.stream}/{partition}")
        if not grows_from(plan.feature_spec, spec):
            raise InvalidArgumentError(
                f"partition {plan.stream}/{partition} has fields {[f.name for f in spec.categorical]} + "
                f"{list(spec.numerical)} of {[f.vocab_size for f in spec.categorical]} rows: not the models' fields "
                f"with at least their {[f.vocab_size for f in plan.feature_spec.categorical]} rows", field="stream")
        self._partition_tables[partition] = TablesVersion.of(spec, vocab_hash, schema_vocab_version(schema))
        return spec

    def grow_for(self, partitions: Iterable[str]) -> None:
        """Grow both models' tables to the newest vocabulary version among `partitions` (rows about to be
        trained on) if it is newer than theirs; versions of one vocabulary only ever add rows."""
        versions = [self._partition_tables[p] for p in partitions if p in self._partition_tables]
        newest = max(versions, key=lambda v: sum(v.sizes), default=self.tables)
        if newest.sizes == self.tables.sizes:
            return
        if not all(_covers(newest.sizes, other.sizes) for other in (*versions, self.tables)):
            raise FailedPreconditionError(
                f"stream {self.plan.stream!r}: partitions of vocabularies that are not versions of one another "
                f"(rows per field {[v.sizes for v in versions]}, the models' {self.tables.sizes})", field="stream")
        added = self.distiller.grow_to(list(newest.sizes))
        self.tables = newest
        self.vocabulary = self.vocabulary_for(newest)
        log.info("tables grown to a newer vocabulary version", extra={
            "operation_id": self.plan.operation_id, "vocab_version": newest.version, "added": added,
            "has_vocabulary": self.vocabulary is not None})
        if self.vocabulary is None:
            log.warning("the stream has no stored vocabulary of the version its ids are of; the grown checkpoints "
                        "carry none, so a predictor cannot serve them from raw values",
                        extra={"operation_id": self.plan.operation_id, "stream": self.plan.stream,
                               "vocab_version": newest.version})

    def vocabulary_for(self, tables: TablesVersion) -> Vocabulary | None:
        """The values of the vocabulary version `tables` are of: the run's vocabulary (or the version of it
        that hash names), else the version stored with the stream; None if neither holds it."""
        if self.vocabulary is not None and self.vocabulary.version_of(tables.vocab_hash) is not None:
            return self.vocabulary.resolve(tables.vocab_hash)
        return dataset_vocabulary(self.ctx.datasets, self.plan.stream, tables.vocab_hash, tables.version)

    def train_batch(self, arrays: SplitArrays, position: DatasetPosition, counts: dict[str, int]) -> None:
        """One stream batch (the rows just before `position`): co-distil, count, maybe checkpoint."""
        began = time.perf_counter()
        if self.plan.settings.online.grow_vocabulary:
            self.grow_for(counts)
        self.distiller.consume(arrays)
        self.seconds["train"] += time.perf_counter() - began
        self.position = position
        for partition, rows in counts.items():
            self.rows_by_partition[partition] = self.rows_by_partition.get(partition, 0) + rows
        self.batches_since_checkpoint += 1
        settings = self.plan.settings
        if checkpoint_due(self.batches_since_checkpoint, time.monotonic() - self.checkpointed_at,
                          settings.checkpoint_every_batches, settings.checkpoint_every_seconds):
            self.checkpoint()
        else:
            self.report(self.fraction(), stage="stream")

    def consume_available(self) -> int:
        """Train on every batch the stream has now; returns how many."""
        count, batches = 0, self.batches()
        while True:
            began = time.perf_counter()
            batch = next(batches, None)
            self.seconds["read"] += time.perf_counter() - began
            if batch is None:
                return count
            self.train_batch(*batch)
            count += 1

    def fraction(self) -> float:
        """Share of the known partitions consumed (partition granularity; a following stream grows)."""
        if self.position is None or self.position.partition is None:
            return 0.0
        if self.position.partition not in self._partitions:
            self._partitions = self.ctx.datasets.partitions(self.plan.stream)
        if self.position.partition not in self._partitions:
            return 0.0
        return self._partitions.index(self.position.partition) / max(len(self._partitions), 1)

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoint(self, *, final: bool = False) -> Checkpoint:
        """Publish the teacher, then the student with the run state and the position (manifest last each)."""
        began = time.perf_counter()
        plan, checkpoints, distiller = self.plan, self.ctx.checkpoints, self.distiller
        state = None if final else portable_state(distiller.state_dict())
        position = self.position.model_dump(mode="json") if self.position else None
        common = {"operation_id": plan.operation_id, "stream": plan.stream, "position": position,
                  "batches": distiller.step, "rows": distiller.rows, "final": final,
                  "vocab_version": self.tables.version, "teacher_updates": len(distiller.teacher.update_steps)}
        # The tables' own version: a grown model's spec and hash are its version's, not the plan's.
        tables = {"vocab_hash": self.tables.vocab_hash, "operation_id": plan.operation_id,
                  "vocabulary": self.vocabulary if self.vocabulary and self.vocabulary.hash == self.tables.vocab_hash
                  else None}
        teacher_version = checkpoints.claim_version(plan.teacher_name, owner=plan.operation_id)
        teacher = publish_model(
            checkpoints, plan.teacher_name, distiller.teacher.model, version=teacher_version,
            feature_spec=distiller.teacher.model.spec, **tables,
            parent=self.last.teacher_ref if self.last else plan.teacher.ref,
            extra={**common, "role": "teacher"})
        files = {OPTIMIZER_FILE: tensor_bytes(distiller.trainer.optimizer.state_dict())}
        if state is not None:
            files[RUN_STATE_FILE] = tensor_bytes(state)
        student_version = checkpoints.claim_version(plan.student_name, owner=plan.operation_id)
        student = publish_model(
            checkpoints, plan.student_name, distiller.trainer.model, version=student_version,
            feature_spec=distiller.trainer.model.spec, **tables,
            parent=self.last.student.ref if self.last else plan.student.ref, files=files,
            extra={**common, "role": "student", "teacher": teacher.ref, "rows_by_partition": self.rows_by_partition,
                   "replay_rows": distiller.replay_rows, "prequential": prequential_summary(distiller),
                   **online_extras(distiller),
                   # adaptive λ: every batch's (batch, gap, λ), as the in-process switch's online_kd_weight_trace
                   **({"kd_weight_trace": [list(entry) for entry in distiller.controller.history]}
                      if distiller.controller is not None else {})})
        self.last = Checkpoint.of(student)
        self.seconds["checkpoint"] += time.perf_counter() - began
        self.batches_since_checkpoint = 0
        self.checkpointed_at = time.monotonic()
        log.info("checkpoint published", extra={"operation_id": plan.operation_id, "student": student.ref,
                                                "teacher": teacher.ref, "position": position})
        self.report(self.fraction(), force=True, stage="stream", details={
            "student": student.ref, "teacher": teacher.ref, "position": position, "batches": distiller.step,
            "rows": distiller.rows, "rows_by_partition": dict(self.rows_by_partition),
            "prequential": prequential_summary(distiller), **online_extras(distiller),
            "seconds": {stage: round(value, 3) for stage, value in self.seconds.items()},
            **({"adaptive": adaptive} if (adaptive := adaptive_details(distiller)) is not None else {})})
        return self.last


def checkpoint_due(batches: int, seconds: float, every_batches: int | None, every_seconds: float) -> bool:
    """Whether to publish after a batch: `every_seconds` seconds since the last checkpoint or, if set,
    `every_batches` batches, whichever comes first. Never before a batch was trained on since (nothing new
    to save). The clock bounds what a lost worker repeats however slow a batch is (a fixed batch count can be
    seconds on a small model or an hour on a big one); a batch cadence puts checkpoints at known places."""
    return batches >= 1 and (seconds >= every_seconds or (every_batches is not None and batches >= every_batches))


TRACE_ENTRIES = 64  # the newest λ updates kept in the operation's details; the student's manifest keeps all


def adaptive_details(distiller: CoDistiller) -> dict[str, Any] | None:
    """Why λ moved (adaptive λ), for the operation's details, as the offline distiller shows it: λ and the
    replay scale now, and per stream batch [batch, relative gap (EMA; > 0: the student is better), λ],
    rounded, the newest TRACE_ENTRIES only. None with a fixed λ."""
    controller = distiller.controller
    if controller is None:
        return None
    return {"lambda": round(float(distiller.trainer.kd_weight), 4),
            "replay_scale": round(float(controller.replay_scale), 4), "observations": len(controller.history),
            "trace": [[int(batch), round(float(gap), 5), round(float(weight), 4)]
                      for batch, gap, weight in controller.history[-TRACE_ENTRIES:]]}


def _covers(sizes: tuple[int, ...], other: tuple[int, ...]) -> bool:
    return all(a >= b for a, b in zip(sizes, other, strict=True))


def portable_state(state: dict[str, Any]) -> dict[str, Any]:
    """`CoDistiller.state_dict()` as `tensor_bytes` can store it: a rolling replay controller keeps its
    histograms as numpy arrays, which `load_tensor_bytes` (weights_only, no pickled code) refuses, so they
    travel as tensors (`restored_state` turns them back). The replay state holds no tensors of its own."""
    if state.get("replay") is None:
        return state
    return {**state, "replay": _map_replay(state["replay"], np.ndarray, lambda a: torch.from_numpy(a.copy()))}


def restored_state(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `portable_state`: the replay controller's arrays as numpy again."""
    if state.get("replay") is None:
        return state
    return {**state, "replay": _map_replay(state["replay"], torch.Tensor, lambda t: t.numpy())}


def _map_replay(value: Any, kind: type, convert: Callable[[Any], Any]) -> Any:
    if isinstance(value, kind):
        return convert(value)
    if isinstance(value, np.generic):  # a numpy scalar is not a plain value either
        return value.item()
    if isinstance(value, dict):
        return {key: _map_replay(item, kind, convert) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_map_replay(item, kind, convert) for item in value)
    return value


def online_extras(distiller: CoDistiller) -> dict[str, Any]:
    """What the options beyond the paper did so far, for the checkpoint's manifest and the operation's
    details: the rolling Δ_shift estimate (windows and rows seen, the shift and ratio in force) and the
    share of the stream where the student taught a collaborative teacher."""
    extras: dict[str, Any] = {}
    rolling = distiller.replay.rolling_summary() if distiller.replay is not None else None
    if rolling is not None:
        extras["rolling_drift"] = rolling
    if isinstance(distiller.teacher, CollaborativeTeacher):
        extras["collaboration_share"] = distiller.teacher.taught_share
    return extras


def prequential_summary(distiller: CoDistiller) -> dict[str, Any]:
    """Windows so far and the row-weighted prequential LogLoss of both models (test-then-train)."""
    windows = distiller.recorder.windows
    rows = sum(w.rows for w in windows)

    def mean(attribute: str) -> float | None:
        values = [(getattr(w, attribute), w.rows) for w in windows if getattr(w, attribute) == getattr(w, attribute)]
        return sum(v * n for v, n in values) / rows if rows and values else None

    last = windows[-1] if windows else None
    return {"windows": len(windows), "student_logloss": mean("student_logloss"),
            "teacher_logloss": mean("teacher_logloss"),
            "last_window": None if last is None else {"student_auc": last.student_auc, "teacher_auc": last.teacher_auc,
                                                      "rows": last.rows, "replay_ratio": last.replay_ratio}}


# ---- the run -----------------------------------------------------------------------------------
def _replay(ctx: CoDistillerContext, plan: CoDistillationPlan) -> tuple[ReplayController | None, SplitArrays | None]:
    """Δ_shift of the replay pool and its controller, as the in-process switch builds them."""
    if plan.replay is None:
        return None, None
    pool = read_rows(ctx.datasets, plan.replay, plan.feature_spec, "replay")
    spec = plan.feature_spec
    controller = ReplayController.from_training_pool(
        plan.settings.replay_config(), pool.categorical if pool.num_categorical else None,
        pool.numerical if pool.num_numerical else None, seed=plan.settings.seed,
        feature_names=[f.name for f in spec.categorical] + list(spec.numerical),
        vocab_sizes=[f.vocab_size for f in spec.categorical])
    return controller, pool


def _models(ctx: CoDistillerContext, plan: CoDistillationPlan, resume: Checkpoint | None,
            ) -> tuple[nn.Module, nn.Module, dict[str, Any] | None, list[dict] | None]:
    """(student, teacher, run state, student optimiser state) to start from."""
    checkpoints = ctx.checkpoints
    if resume is not None:
        student, published = load_model(checkpoints, resume.student.name, resume.student.version)
        name, _, version = resume.teacher_ref.rpartition("/")
        teacher, _ = load_model(checkpoints, name, version)
        return student, teacher, read_state(checkpoints, published, RUN_STATE_FILE), None
    student, published = load_model(checkpoints, plan.student.name, plan.student.version)
    teacher, _ = load_model(checkpoints, plan.teacher.name, plan.teacher.version)
    optimizer = read_state(checkpoints, published, OPTIMIZER_FILE) if OPTIMIZER_FILE in published.manifest.files \
        else None
    return student, teacher, None, optimizer


def start_run(ctx: CoDistillerContext, plan: CoDistillationPlan, report: ReportFn,
              resume: Checkpoint | None) -> StreamRun:
    student, teacher, state, optimizer = _models(ctx, plan, resume)
    controller, pool = _replay(ctx, plan)
    config = plan.settings.core_config(default_device())
    try:
        distiller = build_codistiller(teacher, student, config, replay=controller, replay_pool=pool,
                                      student_optimizer_state=optimizer)
    except ValueError as exc:  # a saved optimiser state of another model
        log.warning("the student's saved optimiser state does not fit; starting a fresh one",
                    extra={"operation_id": plan.operation_id, "error": str(exc)})
        distiller = build_codistiller(teacher, student, config, replay=controller, replay_pool=pool)
    if state is not None:
        distiller.load_state_dict(restored_state(state))
    teacher = ctx.checkpoints.resolve(plan.teacher.name, plan.teacher.version)
    vocabulary = load_vocabulary(ctx.checkpoints, teacher)
    if vocabulary is not None and vocabulary.hash != plan.vocab_hash:
        vocabulary = None
    initial = TablesVersion.of(plan.feature_spec, plan.vocab_hash, vocabulary.version if vocabulary is not None
                               else teacher.manifest.extra.get("vocab_version"))
    run = StreamRun(ctx=ctx, plan=plan, distiller=distiller, report=report, vocabulary=vocabulary,
                    position=resume.position if resume else plan.start, tables=resume.tables if resume else initial,
                    rows_by_partition=dict(resume.rows_by_partition) if resume else {}, last=resume)
    run.vocabulary = run.vocabulary_for(run.tables)  # a run resumed after growth: the grown version's values
    return run


def run_codistillation(ctx: CoDistillerContext, plan: CoDistillationPlan, report: ReportFn,
                       follow_poll_s: float = 2.0) -> PublishedCheckpoint:
    """The whole task; returns the last student published (the request's student if the stream was empty)."""
    resume = latest_checkpoint(ctx.checkpoints, plan)
    if resume is not None and resume.final:  # finished before the worker was lost: nothing left to do
        return resume.student
    began = time.perf_counter()
    run = start_run(ctx, plan, report, resume)
    run.seconds["start"] = time.perf_counter() - began
    report(run.fraction(), force=True, stage="stream", details={
        "resumed_from": resume.student.ref if resume else None, "position": run.position.model_dump(mode="json")
        if run.position else None})
    while True:
        run.consume_available()
        if not plan.follow:
            break
        report(run.fraction(), force=True)  # raises once the operation is cancelled
        time.sleep(follow_poll_s)
    if run.batches_since_checkpoint == 0 and run.last is not None:
        return run.last.student  # the last checkpoint is the end of the stream (teacher: partial window dropped)
    if run.distiller.step == 0:
        return ctx.checkpoints.resolve(plan.student.name, plan.student.version)
    run.distiller.finish()
    report(1.0, force=True, stage="publish")
    return run.checkpoint(final=True).student
