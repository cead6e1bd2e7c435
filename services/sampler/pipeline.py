"""The sampling workflow, without Celery: plan, select, score one block, publish.

    select                   # one pass over the label (and timestamp) columns: the core sampler's choice
      → score_block(k) × K   # block k's rows read from the partitions that hold them, scored by the teacher
      → publish              # the blocks concatenated into ONE partition of the sample dataset

Why selection is one step and not K: the core `StrategicSampler` (crossadapt.transfer.offline.sampling)
fixes D' = round(r · |D|) with quotas that move between blocks (a block short of a class hands its
quota on) and draws every block from one seeded random stream, so a block cannot choose its rows
without the others' counts and the draws before it. The selection reads two columns and runs the
core sampler itself, so the platform's sample is exactly the in-process one for the same seed; the
blocks then do the heavy part (reading the feature rows, the teacher's forward pass, writing) in
parallel.

Why one partition: a dataset is visible partition by partition, so a sample written as several
would be seen half-written; one object (written whole by the store) is seen complete or not at all.

Scratch (in the object store, removed after publish or on failure/cancel)::

    operations/<op>/selection.npz         indices, unclicked rows and each block's slice of them
    operations/<op>/selection.json        the core SampleReport and the dataset's partition index
    operations/<op>/blocks/00003.parquet  block 3's rows with `teacher_logit`
    operations/<op>/blocks/00003.json     its sha256, size and row counts (written after the file)

Every step is idempotent (fixed keys, written whole): a redelivered task redoes or skips its work.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crossadapt.data.arrays import SplitArrays
from crossadapt.models.spec import FeatureSpec
from crossadapt.transfer.offline.sampling import SampleReport, SamplingConfig, StrategicSampler, assemble_pcvr_sample
from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.model_io import dataset_feature_spec, load_model, read_all, split_table, table_arrays, write_split
from services.common.operations import OperationStore
from services.common.storage import CheckpointStore, DatasetStore
from services.common.checks import checked_name
from services.common.storage.checkpoints import CheckpointNotFoundError
from services.common.storage.objects import ObjectNotFoundError
from services.common.storage.dataset_rows import PartitionIndex, scan, take_rows

log = logging.getLogger(__name__)
MAX_BLOCKS = 1024  # each block is a task; more only costs scheduling
TEACHER_BATCH_ROWS = 8192  # rows per teacher forward (the in-process switch's EVAL_BATCH_ROWS)
ProgressFn = Callable[[float], None]
Target = Literal["click", "conversion"]


class SamplingPlan(BaseModel):
    """Everything the tasks need, fixed when the operation starts (stored in the operation record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: str
    dataset: str
    teacher_name: str
    teacher_version: str
    sample_name: str
    config: SamplingConfig
    target: Target = "click"
    feature_spec: FeatureSpec
    vocab_hash: str = ""

    @property
    def blocks(self) -> int:
        return self.config.temporal_blocks if self.config.temporal else 1

    @property
    def teacher_ref(self) -> str:
        return f"{self.teacher_name}/{self.teacher_version}"

    def units(self) -> list[str]:
        """Progress units: the selection, one per block, the publish."""
        return ["select", *(block_unit(k) for k in range(self.blocks)), "publish"]


def block_unit(block: int) -> str:
    return f"block:{block:05d}"


@dataclass(frozen=True)
class SamplerContext:
    """The stores a step works on (one per worker process)."""

    checkpoints: CheckpointStore
    datasets: DatasetStore
    operations: OperationStore
    chunk_rows: int = 262_144


class NotReadyError(Exception):
    """Publish found a block's output missing (a duplicate delivery fired the chord early): retry soon."""


# ---- the request ------------------------------------------------------------------------------
def sampling_config(fields: dict[str, Any]) -> tuple[SamplingConfig, Target]:
    """The request's SamplingConfig (its JSON form, unset fields absent) as the core config and target.

    Unset or zero fields take the paper's defaults; out-of-range values are INVALID_ARGUMENT naming
    `config.<field>`.
    """
    target = fields.get("target") or "click"
    if target not in ("click", "conversion"):
        raise InvalidArgumentError(f"target must be 'click' or 'conversion', got {target!r}", field="config.target")
    values: dict[str, Any] = {
        "ratio": fields.get("ratio") or 0.1,
        "positive_ratio": fields.get("positive_ratio", 0.5),
        "temporal_blocks": fields.get("temporal_blocks") or 10,
        "unclicked_ratio": fields.get("unclicked_ratio", 0.0),
        "seed": int(fields.get("seed", 0)),
        "temporal": not fields.get("disable_temporal", False),
        "balanced": not fields.get("disable_balance", False),
        "empty_block_policy": fields.get("empty_block_policy") or "redistribute",
    }
    for name in ("ratio", "positive_ratio", "unclicked_ratio"):
        if not math.isfinite(float(values[name])):
            raise InvalidArgumentError(f"{name} must be a finite number, got {values[name]}", field=f"config.{name}")
    if values["temporal_blocks"] > MAX_BLOCKS:
        raise InvalidArgumentError(f"temporal_blocks must be <= {MAX_BLOCKS}, got {values['temporal_blocks']}",
                                   field="config.temporal_blocks")
    try:
        config = SamplingConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "config"
        raise InvalidArgumentError(f"{name}: {first['msg']} (got {values.get(name)!r})", field=f"config.{name}") from None
    if config.unclicked_ratio > 0 and target != "conversion":
        raise InvalidArgumentError("unclicked-exposure augmentation (unclicked_ratio > 0) is for pCVR samples: "
                                   "set target 'conversion'", field="config.unclicked_ratio")
    return config, target


def plan_sampling(  # noqa: PLR0913 - the request's fields
    checkpoints: CheckpointStore,
    datasets: DatasetStore,
    *,
    operation_id: str,
    dataset: str,
    teacher_name: str,
    teacher_version: str,
    sample_name: str,
    config: SamplingConfig,
    target: Target,
    dataset_position: bool = False,
) -> SamplingPlan:
    """Validate a request before any worker runs; errors name the request field at fault."""
    checked_name(dataset, "dataset.name")
    checked_name(teacher_name, "teacher.name")
    checked_name(sample_name, "sample_name")
    if dataset_position:
        raise InvalidArgumentError("sampling reads the whole dataset; a start position is not supported",
                                   field="dataset.position")
    if sample_name == dataset:
        raise InvalidArgumentError("the sample must be a new dataset, not the source", field="sample_name")
    try:
        teacher = checkpoints.resolve(teacher_name, teacher_version or None)
    except NotFoundError as exc:
        raise CheckpointNotFoundError(exc.message, field="teacher") from None
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message, field="teacher.version") from None
    if "model.safetensors" not in teacher.manifest.files:
        raise InvalidArgumentError(f"{teacher.ref} holds no model (architecture {teacher.manifest.architecture!r}); "
                                   "the teacher must be a trained model checkpoint", field="teacher")
    try:
        spec, vocab_hash = dataset_feature_spec(datasets, dataset)
    except NotFoundError as exc:
        raise NotFoundError(exc.message, field="dataset") from None
    if teacher.manifest.vocab_hash and vocab_hash and teacher.manifest.vocab_hash != vocab_hash:
        raise InvalidArgumentError(
            f"vocabulary mismatch: {teacher.ref} has vocab_hash {teacher.manifest.vocab_hash[:12]}…, dataset "
            f"{dataset!r} was encoded with {vocab_hash[:12]}…", field="teacher")
    if teacher.manifest.feature_spec != spec:
        raise InvalidArgumentError(
            f"feature spec mismatch: {teacher.ref} reads {_describe(teacher.manifest.feature_spec)}, dataset "
            f"{dataset!r} holds {_describe(spec)}", field="teacher")
    if target == "conversion" and "conversion" not in _column_names(datasets, dataset):
        raise InvalidArgumentError(f"target 'conversion': dataset {dataset!r} has no conversion column",
                                   field="config.target")
    if datasets.partitions(sample_name):
        raise AlreadyExistsError(f"dataset {sample_name!r} exists already (samples are immutable)",
                                 field="sample_name")
    return SamplingPlan(
        operation_id=operation_id, dataset=dataset, teacher_name=teacher.name, teacher_version=teacher.version,
        sample_name=sample_name, config=config, target=target, feature_spec=spec, vocab_hash=vocab_hash,
    )


def _column_names(datasets: DatasetStore, name: str) -> list[str]:
    """The columns of the dataset's first partition (its footer's schema; the spec check covers the others)."""
    first = datasets.first_schema(name)
    return list(first[0].names) if first else []


def _describe(spec: FeatureSpec) -> str:
    fields = ", ".join(f"{f.name}[{f.vocab_size}]" for f in spec.categorical[:6])
    more = "…" if len(spec.categorical) > 6 else ""
    return f"{len(spec.categorical)} categorical ({fields}{more}) + {len(spec.numerical)} numerical"


# ---- select -------------------------------------------------------------------------------------
def _scratch(plan: SamplingPlan, *parts: str) -> str:
    return "/".join(("operations", plan.operation_id, *parts))


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@dataclass(frozen=True)
class Selection:
    """The core sampler's choice: clicked-sample row ids and unclicked row ids, each cut by block."""

    indices: np.ndarray  # [n'] global row ids in time order (oversampled rows repeat)
    unclicked: np.ndarray  # [u] unclicked row ids (pCVR augmentation), sorted
    block_offsets: np.ndarray  # [K + 1] block k = indices[block_offsets[k]:block_offsets[k+1]]
    unclicked_offsets: np.ndarray  # [K + 1] likewise for unclicked
    report: SampleReport
    index: PartitionIndex

    def block_rows(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        return (self.indices[self.block_offsets[block]:self.block_offsets[block + 1]],
                self.unclicked[self.unclicked_offsets[block]:self.unclicked_offsets[block + 1]])


def _core(call: Callable[[], Any], dataset: str) -> Any:
    """The core sampler refuses bad data with ValueError; here that names the dataset."""
    try:
        return call()
    except ValueError as exc:
        raise InvalidArgumentError(f"dataset {dataset!r}: {exc}", field="dataset") from exc


def choose(plan: SamplingPlan, label: np.ndarray, timestamp: np.ndarray | None, conversion: np.ndarray | None,
           ) -> tuple[np.ndarray, np.ndarray, SampleReport]:
    """The core sampler on the dataset's columns, exactly as a process holding the split would call it."""
    sampler = StrategicSampler(plan.config)
    if plan.target == "click":
        result = _core(lambda: sampler.sample(label, timestamp), plan.dataset)
        return result.indices, np.zeros(0, dtype=np.int64), result.report
    if conversion is None:
        raise InvalidArgumentError(f"target 'conversion': dataset {plan.dataset!r} has no conversion column",
                                   field="config.target")
    clicked = np.flatnonzero(np.asarray(label) > 0.5)
    result = _core(lambda: sampler.sample(conversion, timestamp, candidates=clicked), plan.dataset)
    unclicked = (_core(lambda: sampler.augment_unclicked(result, label), plan.dataset)
                 if plan.config.unclicked_ratio > 0 else np.zeros(0, dtype=np.int64))
    return result.indices, unclicked, result.report


def select(ctx: SamplerContext, plan: SamplingPlan) -> Selection:
    """Read the label columns, run the core sampler, store the choice cut by block (skipped if stored)."""
    existing = load_selection(ctx, plan)
    if existing is not None:
        return existing
    columns, index = scan(ctx.datasets, plan.dataset, plan.feature_spec, ("label", "timestamp", "conversion"))
    label = columns["label"]
    if label is None or len(label) == 0:
        raise FailedPreconditionError(f"dataset {plan.dataset!r} has no rows", field="dataset")
    indices, unclicked, report = choose(plan, label, columns["timestamp"], columns["conversion"])
    if report.total_rows == 0:
        raise InvalidArgumentError(
            f"the sample of {report.source_rows} rows at ratio {plan.config.ratio} would be empty", field="config.ratio")
    drawn = np.array([b.drawn_pos + b.drawn_neg for b in report.blocks], dtype=np.int64)
    block_offsets = np.concatenate([[0], np.cumsum(drawn)]).astype(np.int64)  # indices are block after block
    unclicked_offsets = np.array([len(part) for part in np.array_split(unclicked, plan.blocks)], dtype=np.int64)
    unclicked_offsets = np.concatenate([[0], np.cumsum(unclicked_offsets)]).astype(np.int64)
    ctx.checkpoints.objects.put_bytes(_scratch(plan, "selection.npz"), _npz_bytes(
        indices=indices, unclicked=unclicked, block_offsets=block_offsets, unclicked_offsets=unclicked_offsets))
    meta = {"report": report.model_dump(mode="json"), "index": index.model_dump(mode="json")}
    ctx.checkpoints.objects.put_bytes(_scratch(plan, "selection.json"), json.dumps(meta).encode())
    return Selection(indices, unclicked, block_offsets, unclicked_offsets, report, index)


def load_selection(ctx: SamplerContext, plan: SamplingPlan) -> Selection | None:
    """The stored selection, or None if `select` has not finished (the .json is written last)."""
    objects = ctx.checkpoints.objects
    try:
        meta = json.loads(objects.get_bytes(_scratch(plan, "selection.json")))
        arrays = np.load(io.BytesIO(objects.get_bytes(_scratch(plan, "selection.npz"))))
    except ObjectNotFoundError:
        return None
    return Selection(arrays["indices"], arrays["unclicked"], arrays["block_offsets"], arrays["unclicked_offsets"],
                     SampleReport.model_validate(meta["report"]), PartitionIndex.model_validate(meta["index"]))


# ---- score one block ------------------------------------------------------------------------------
_TEACHERS: dict[tuple[str, str, str], Any] = {}


def teacher_model(ctx: SamplerContext, plan: SamplingPlan) -> Any:
    """The teacher (eval mode), loaded once per worker process and version."""
    key = (ctx.checkpoints.objects.uri(), plan.teacher_name, plan.teacher_version)
    if key not in _TEACHERS:
        _TEACHERS.clear()  # one teacher at a time: a worker serves one switch after another
        _TEACHERS[key] = load_model(ctx.checkpoints, plan.teacher_name, plan.teacher_version)[0]
    return _TEACHERS[key]


class BlockEntry(BaseModel):
    """What a block task wrote (its commit record)."""

    model_config = ConfigDict(extra="forbid")

    sha256: str
    size: int
    rows: int
    clicked_rows: int
    unclicked_rows: int = Field(ge=0)


def _teacher_logits(teacher: Any, arrays: SplitArrays, chunk_rows: int, progress: ProgressFn) -> np.ndarray:
    from crossadapt.transfer.offline.distillation import cache_teacher_logits

    logits = np.empty(len(arrays), dtype=np.float32)
    for start in range(0, len(arrays), chunk_rows):
        stop = min(start + chunk_rows, len(arrays))
        logits[start:stop] = cache_teacher_logits(teacher, arrays.slice(start, stop), TEACHER_BATCH_ROWS)
        progress(stop / len(arrays))
    return logits


def score_block(ctx: SamplerContext, plan: SamplingPlan, block: int, progress: ProgressFn) -> BlockEntry:
    """Map: block `block`'s sample rows read and scored by the teacher → scratch; skipped if done."""
    entry_key = _scratch(plan, "blocks", f"{block:05d}.json")
    try:
        return BlockEntry.model_validate_json(ctx.checkpoints.objects.get_bytes(entry_key))
    except (ObjectNotFoundError, ValidationError):
        pass
    selection = load_selection(ctx, plan)
    if selection is None:
        raise NotReadyError("the selection is not stored yet")
    clicked, unclicked = selection.block_rows(block)
    rows = take_rows(ctx.datasets, selection.index, plan.feature_spec, np.concatenate([clicked, unclicked]))
    logits = _teacher_logits(teacher_model(ctx, plan), rows, ctx.chunk_rows, progress) if len(rows) else \
        np.zeros(0, dtype=np.float32)
    rows = rows.with_teacher_logit(logits)
    if plan.target == "conversion":
        rows = _with_pcvr_labels(plan, rows, len(clicked), logits)
    table = split_table(rows, plan.feature_spec, plan.vocab_hash)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    data = buffer.getvalue().to_pybytes()
    ctx.checkpoints.objects.put_bytes(_scratch(plan, "blocks", f"{block:05d}.parquet"), data)
    entry = BlockEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data), rows=len(rows),
                       clicked_rows=len(clicked), unclicked_rows=len(unclicked))
    ctx.checkpoints.objects.put_bytes(entry_key, entry.model_dump_json().encode())
    return entry


def _with_pcvr_labels(plan: SamplingPlan, rows: SplitArrays, clicked: int, logits: np.ndarray) -> SplitArrays:
    """Eq. 9: the clicked rows keep their conversion labels, the unclicked ones get the teacher's pCVR."""
    from dataclasses import replace

    local_clicked, local_unclicked = np.arange(clicked), np.arange(clicked, len(rows))
    pcvr = 1.0 / (1.0 + np.exp(-logits[clicked:].astype(np.float64)))
    conversion = rows.conversion if rows.conversion is not None else np.zeros(len(rows), np.float32)
    sample = _core(lambda: assemble_pcvr_sample(local_clicked, conversion, local_unclicked, pcvr), plan.dataset)
    return replace(rows, conversion=sample.labels.astype(np.float32))


# ---- publish ------------------------------------------------------------------------------------------
def _block_arrays(ctx: SamplerContext, plan: SamplingPlan, block: int) -> tuple[SplitArrays, BlockEntry, bool]:
    """Block `block`'s rows, verified against their sha256; a corrupt file is rescored here (True)."""
    objects = ctx.checkpoints.objects
    entry_key, file_key = _scratch(plan, "blocks", f"{block:05d}.json"), _scratch(plan, "blocks", f"{block:05d}.parquet")
    try:
        entry = BlockEntry.model_validate_json(objects.get_bytes(entry_key))
    except ObjectNotFoundError:
        raise NotReadyError(f"block {block} is not scored yet") from None
    except ValidationError:
        entry = None
    data = b""
    if entry is not None:
        try:
            data = objects.get_bytes(file_key)
        except ObjectNotFoundError:
            data = b""
    repaired = entry is None or hashlib.sha256(data).hexdigest() != entry.sha256
    if repaired:
        log.warning("block output corrupt or missing: rescoring it", extra={
            "operation_id": plan.operation_id, "block": block, "key": file_key})
        objects.delete(entry_key)
        entry = score_block(ctx, plan, block, lambda _: None)
        data = objects.get_bytes(file_key)
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise FailedPreconditionError(f"block {block}'s output was corrupt again after rescoring", field=file_key)
    assert entry is not None
    try:
        arrays = table_arrays(pq.read_table(pa.BufferReader(data)), plan.feature_spec)
    except pa.ArrowException as exc:  # sha256 matched, so the bytes are what the block task wrote
        raise FailedPreconditionError(f"block {block}'s output is unreadable: {exc}", field=file_key) from exc
    return arrays, entry, repaired


def publish(ctx: SamplerContext, plan: SamplingPlan) -> dict[str, Any]:
    """Reduce: the blocks in order (clicked sample, then unclicked rows) as one partition; returns the report."""
    selection = load_selection(ctx, plan)
    if selection is None:
        raise NotReadyError("the selection is not stored yet")
    clicked_parts, unclicked_parts, entries, repaired = [], [], [], []
    for block in range(plan.blocks):
        arrays, entry, was_repaired = _block_arrays(ctx, plan, block)
        clicked_parts.append(arrays.slice(0, entry.clicked_rows))
        unclicked_parts.append(arrays.slice(entry.clicked_rows, entry.rows))
        entries.append(entry)
        if was_repaired:
            repaired.append(block)
    sample = SplitArrays.concat(clicked_parts + unclicked_parts)
    partition = _write_sample(ctx, plan, sample)
    return sample_details(plan, selection.report, sample, clicked_parts, entries, repaired, partition)


def _write_sample(ctx: SamplerContext, plan: SamplingPlan, sample: SplitArrays) -> str:
    """One partition; a redelivered publish finds its own earlier write and accepts it."""
    try:
        return write_split(ctx.datasets, plan.sample_name, sample, plan.feature_spec, vocab_hash=plan.vocab_hash,
                           partitions=1)[0]
    except AlreadyExistsError:
        existing = read_all(ctx.datasets, plan.sample_name, plan.feature_spec)
        if not _same_rows(existing, sample):
            raise AlreadyExistsError(f"dataset {plan.sample_name!r} was written by another writer meanwhile",
                                     field="sample_name") from None
        return ctx.datasets.partitions(plan.sample_name)[0]


def _same_rows(a: SplitArrays, b: SplitArrays) -> bool:
    from dataclasses import fields

    for f in fields(SplitArrays):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y, equal_nan=x.dtype.kind == "f")):
            return False
    return True


def _calibration(labels: np.ndarray, logits: np.ndarray) -> dict[str, float | None]:
    """The teacher on hard-labelled rows: AUC, LogLoss, mean prediction vs positive rate, PCOC."""
    from crossadapt.metrics import MetricError, auc, logloss, pcoc

    if len(labels) == 0:
        return {"rows": 0, "auc": None, "logloss": None, "mean_prob": None, "positive_rate": None, "pcoc": None}
    prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def safe(metric: Callable[[np.ndarray, np.ndarray], float]) -> float | None:
        try:
            return float(metric(labels, prob))
        except MetricError:
            return None

    return {"rows": int(len(labels)), "auc": safe(auc), "logloss": safe(logloss), "mean_prob": float(prob.mean()),
            "positive_rate": float(labels.mean()), "pcoc": safe(pcoc)}


def sample_details(plan: SamplingPlan, report: SampleReport, sample: SplitArrays, clicked_parts: list[SplitArrays],
                   entries: list[BlockEntry], repaired: list[int], partition: str) -> dict[str, Any]:
    """The operation's `details`: the core report, rows per block, the teacher's calibration."""
    def hard_labels(part: SplitArrays) -> np.ndarray:
        column = part.label if plan.target == "click" else part.conversion
        return np.asarray(column, dtype=np.float64)

    clicked = SplitArrays.concat(clicked_parts)
    blocks = [{"block": k, "rows": e.rows, "unclicked_rows": e.unclicked_rows,
               "teacher": _calibration(hard_labels(part), np.asarray(part.teacher_logit))}
              for k, (part, e) in enumerate(zip(clicked_parts, entries, strict=True))]
    return {
        "dataset": plan.sample_name,
        "partition": partition,
        "source": plan.dataset,
        "teacher_checkpoint": plan.teacher_ref,
        "target": plan.target,
        "rows": len(sample),
        "clicked_rows": len(clicked),
        "unclicked_rows": len(sample) - len(clicked),
        "rows_per_block": [e.rows for e in entries],
        "positive_rate": report.positive_rate,
        "source_positive_rate": report.source_positive_rate,
        "teacher": _calibration(hard_labels(clicked), np.asarray(clicked.teacher_logit)),
        "blocks": blocks,
        "repaired_blocks": repaired,
        "sampling": report.model_dump(mode="json"),
    }


def cleanup(ctx: SamplerContext, plan: SamplingPlan) -> None:
    """Drop the operation's scratch objects (after publish, or after a failure or cancel)."""
    ctx.checkpoints.objects.delete_prefix(_scratch(plan))


def plan_from_record(params: dict[str, Any]) -> SamplingPlan:
    return SamplingPlan.model_validate(params["plan"])

