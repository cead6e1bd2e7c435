"""The projection map-reduce, without Celery: plan, shard stats, fit, apply, publish.

Every step is idempotent (its output goes to a fixed key, written whole), so a redelivered or
retried task redoes or skips work without harm. Intermediate results live in the object store:

    operations/<op_id>/stats/<field>/00003.json         # ProjectionStats of shard 3 (count, Σx, Σxxᵀ; float64)
    operations/<op_id>/projections/<field>.json         # fitted Projection (kind, W [d_T, d_S], report)
    operations/<op_id>/files/<field>/00003.json         # sha256 + size of the student shard written

Student shards go straight into the student version claimed when the operation started
(`checkpoints/<student>/v00000N/tables/...`); it stays invisible until `publish` writes its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from crossadapt.checkpoint import CheckpointManifest, FileEntry
from crossadapt.transfer import Projection, ProjectionStats, fit_projection
from services.common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from services.common.operations import OperationStore
from services.common.storage.checkpoints import (
    CheckpointNotFoundError,
    CheckpointStore,
    PublishedCheckpoint,
    check_name,
)
from services.common.storage.objects import ObjectNotFoundError
from services.common.storage.tables import (
    TABLES_ARCHITECTURE,
    ShardEntry,
    TableLayout,
    encode_shard,
    read_shard,
    shard_path,
    table_layouts,
)

MAX_WIDTH = 4096
ProgressFn = Callable[[float], None]


class ProjectionPlan(BaseModel):
    """Everything the tasks need, fixed when the operation starts (stored in the operation record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: str
    teacher_name: str
    teacher_version: str
    student_name: str
    student_version: str = ""
    width: int = Field(gt=0)
    seed: int = Field(ge=0)
    tables: dict[str, TableLayout]

    def needs_stats(self, field: str) -> bool:
        """PCA (d_S < d_T) needs the table's covariance; copy and expansion do not."""
        return self.width < self.tables[field].dim

    def units(self) -> list[str]:
        """Progress units: one per shard task, plus fit and publish."""
        stats = [stats_unit(f, i) for f, t in self.tables.items() if self.needs_stats(f) for i in range(len(t.shards))]
        apply = [apply_unit(f, i) for f, t in self.tables.items() for i in range(len(t.shards))]
        return [*stats, "fit", *apply, "publish"]


def stats_unit(field: str, shard: int) -> str:
    return f"stats:{field}:{shard:05d}"


def apply_unit(field: str, shard: int) -> str:
    return f"apply:{field}:{shard:05d}"


def plan_projection(  # noqa: PLR0913 - the request's fields
    store: CheckpointStore,
    *,
    operation_id: str,
    teacher_name: str,
    teacher_version: str,
    student_name: str,
    width: int,
    seed: int,
    fields: list[str],
    vocab_hash: str = "",
    vocab_sizes: Mapping[str, int] | None = None,
) -> ProjectionPlan:
    """Validate a request against the teacher's manifest; errors name the request field at fault."""
    if not teacher_name:
        raise InvalidArgumentError("teacher checkpoint name is empty", field="teacher.name")
    try:
        check_name(teacher_name)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message, field="teacher.name") from None
    try:
        check_name(student_name)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message, field="student_name") from None
    if width <= 0 or width > MAX_WIDTH:
        raise InvalidArgumentError(f"width must be in 1..{MAX_WIDTH}, got {width}", field="width")
    try:
        teacher = store.resolve(teacher_name, teacher_version or None)
    except NotFoundError as exc:
        raise CheckpointNotFoundError(exc.message, field="teacher") from None
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message, field="teacher.version") from None
    layouts = table_layouts(teacher.manifest, teacher.ref)
    if len(set(fields)) != len(fields):
        raise InvalidArgumentError(f"fields lists a table twice: {fields}", field="fields")
    for index, field in enumerate(fields):
        if field not in layouts:
            raise InvalidArgumentError(
                f"unknown field {field!r}; {teacher.ref} has tables {sorted(layouts)}", field=f"fields[{index}]"
            )
    if vocab_hash and vocab_hash != teacher.manifest.vocab_hash:
        raise InvalidArgumentError(
            f"vocabulary mismatch: {teacher.ref} has vocab_hash {teacher.manifest.vocab_hash[:12] or '(none)'}…, "
            f"the request expects {vocab_hash[:12]}…",
            field="vocab_hash",
        )
    for field, rows in sorted((vocab_sizes or {}).items()):
        if field not in layouts:
            raise InvalidArgumentError(f"unknown field {field!r}; {teacher.ref} has tables {sorted(layouts)}",
                                       field=f"vocab_sizes[{field}]")
        if rows != layouts[field].rows:
            raise InvalidArgumentError(
                f"vocabulary mismatch for {field!r}: the teacher table has {layouts[field].rows} rows, "
                f"the request expects {rows}",
                field=f"vocab_sizes[{field}]",
            )
    chosen = {f: layouts[f] for f in (fields or sorted(layouts))}
    return ProjectionPlan(
        operation_id=operation_id, teacher_name=teacher.name, teacher_version=teacher.version,
        student_name=student_name, width=width, seed=seed, tables=chosen,
    )


@dataclass(frozen=True)
class ProjectorContext:
    """The stores a step works on (one per worker process)."""

    checkpoints: CheckpointStore
    operations: OperationStore
    chunk_rows: int = 262_144


class NotReadyError(Exception):
    """A reduce step found a map output missing (a duplicate delivery fired the chord early): retry soon."""


def _scratch(plan: ProjectionPlan, *parts: str) -> str:
    return "/".join(("operations", plan.operation_id, *parts))


def _teacher(ctx: ProjectorContext, plan: ProjectionPlan) -> PublishedCheckpoint:
    return ctx.checkpoints.resolve(plan.teacher_name, plan.teacher_version)


def _chunks(rows: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, rows, chunk_rows):
        yield start, min(start + chunk_rows, rows)


def _read_teacher_shard(ctx: ProjectorContext, plan: ProjectionPlan, field: str, shard: int) -> np.ndarray:
    layout = plan.tables[field]
    entry: ShardEntry = layout.shards[shard]
    return read_shard(ctx.checkpoints, _teacher(ctx, plan), entry, layout.dim)


def shard_stats(ctx: ProjectorContext, plan: ProjectionPlan, field: str, shard: int, progress: ProgressFn) -> int:
    """Map: count, Σx, Σxxᵀ (float64) of one teacher shard → scratch; returns its row count."""
    key = _scratch(plan, "stats", field, f"{shard:05d}.json")
    if ctx.checkpoints.objects.exists(key):
        return json.loads(ctx.checkpoints.objects.get_bytes(key))["count"]
    rows = _read_teacher_shard(ctx, plan, field, shard)
    total: ProjectionStats | None = None
    for start, stop in _chunks(len(rows), ctx.chunk_rows):
        part = ProjectionStats.from_chunk(rows[start:stop], first_row=plan.tables[field].shards[shard].start + start)
        total = part if total is None else total.merge(part)
        progress(stop / len(rows))
    assert total is not None  # shards have >= 1 row (layout validation)
    ctx.checkpoints.objects.put_bytes(key, json.dumps(total.to_dict()).encode())
    return total.count


def fit(ctx: ProjectorContext, plan: ProjectionPlan) -> dict[str, str]:
    """Reduce: merge each field's shard stats, fit W (copy / QR expansion / PCA) → scratch; returns kinds."""
    kinds = {}
    for field, layout in plan.tables.items():
        stats = None
        if plan.needs_stats(field):
            parts = []
            for shard in range(len(layout.shards)):
                try:
                    raw = ctx.checkpoints.objects.get_bytes(_scratch(plan, "stats", field, f"{shard:05d}.json"))
                except ObjectNotFoundError:
                    raise NotReadyError(f"stats of {field} shard {shard} not written yet") from None
                parts.append(ProjectionStats.from_dict(json.loads(raw)))
            stats = ProjectionStats.sum(parts)
        projection = fit_projection(stats, layout.dim, plan.width, plan.seed)
        ctx.checkpoints.objects.put_bytes(
            _scratch(plan, "projections", f"{field}.json"), json.dumps(projection.to_dict()).encode()
        )
        kinds[field] = projection.kind
    return kinds


def _projection(ctx: ProjectorContext, plan: ProjectionPlan, field: str) -> Projection:
    try:
        raw = ctx.checkpoints.objects.get_bytes(_scratch(plan, "projections", f"{field}.json"))
    except ObjectNotFoundError:
        raise NotReadyError(f"projection of {field} not fitted yet") from None
    return Projection.from_dict(json.loads(raw))


def apply_shard(ctx: ProjectorContext, plan: ProjectionPlan, field: str, shard: int, progress: ProgressFn) -> str:
    """Map: student shard = teacher shard @ W, written into the claimed student version; returns its sha256."""
    entry_key = _scratch(plan, "files", field, f"{shard:05d}.json")
    relpath = shard_path(field, shard)
    if ctx.checkpoints.objects.exists(entry_key):
        return json.loads(ctx.checkpoints.objects.get_bytes(entry_key))["sha256"]
    projection = _projection(ctx, plan, field)
    rows = _read_teacher_shard(ctx, plan, field, shard)
    out = np.empty((len(rows), plan.width), dtype=np.float32)
    first = plan.tables[field].shards[shard].start
    for start, stop in _chunks(len(rows), ctx.chunk_rows):
        projection.apply(rows[start:stop], out=out[start:stop], first_row=first + start)
        progress(stop / len(rows))
    entry = ctx.checkpoints.write_file(plan.student_name, plan.student_version, relpath, encode_shard(out))
    ctx.checkpoints.objects.put_bytes(entry_key, entry.model_dump_json().encode())
    return entry.sha256


def student_manifest(ctx: ProjectorContext, plan: ProjectionPlan) -> CheckpointManifest:
    """The student's manifest: the teacher's vocabulary and spec, the projected tables, parent = teacher."""
    teacher = _teacher(ctx, plan)
    files: dict[str, FileEntry] = {}
    tables: dict[str, dict] = {}
    reports: dict[str, dict] = {}
    for field, layout in plan.tables.items():
        for shard in range(len(layout.shards)):
            try:
                raw = ctx.checkpoints.objects.get_bytes(_scratch(plan, "files", field, f"{shard:05d}.json"))
            except ObjectNotFoundError:
                raise NotReadyError(f"student shard {shard} of {field} not written yet") from None
            files[shard_path(field, shard)] = FileEntry.model_validate_json(raw)
        # The student's shards are files of their own, whether the teacher's were files or ranges of its model.
        shards = tuple(ShardEntry(file=shard_path(field, i), start=s.start, rows=s.rows)
                       for i, s in enumerate(layout.shards))
        tables[field] = TableLayout(rows=layout.rows, dim=plan.width, shards=shards).model_dump(mode="json")
        reports[field] = _projection(ctx, plan, field).report.model_dump(mode="json")
    return CheckpointManifest(
        architecture=TABLES_ARCHITECTURE,
        config={"embedding_dim": plan.width, "projection_seed": plan.seed},
        feature_spec=teacher.manifest.feature_spec,
        vocab_hash=teacher.manifest.vocab_hash,
        files=files,
        parent=teacher.ref,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra={"tables": tables, "projection": reports, "operation_id": plan.operation_id},
    )


def publish(ctx: ProjectorContext, plan: ProjectionPlan) -> PublishedCheckpoint:
    """Final step: write the student manifest (files were checked to exist); idempotent."""
    store = ctx.checkpoints
    try:  # a retry after a crash between the manifest write and the state change
        existing = store.resolve(plan.student_name, plan.student_version)
    except CheckpointNotFoundError:
        return store.publish_manifest(plan.student_name, plan.student_version, student_manifest(ctx, plan))
    if existing.manifest.extra.get("operation_id") != plan.operation_id:
        raise FailedPreconditionError(f"{existing.ref} was published by another operation", field="student_name")
    return existing


def cleanup(ctx: ProjectorContext, plan: ProjectionPlan) -> None:
    """Drop the operation's scratch objects (after publish, or after a failure)."""
    ctx.checkpoints.objects.delete_prefix(_scratch(plan))


def run_in_process(ctx: ProjectorContext, plan: ProjectionPlan) -> PublishedCheckpoint:
    """Every step of a planned projection one after another in this process (no Celery): what a bench or a
    test needs when the projection is a setup step, not what it measures. The plan's student version must
    be claimed already; the scratch objects are dropped after the publish."""
    for field, layout in plan.tables.items():
        if plan.needs_stats(field):
            for shard in range(len(layout.shards)):
                shard_stats(ctx, plan, field, shard, lambda _: None)
    fit(ctx, plan)
    for field, layout in plan.tables.items():
        for shard in range(len(layout.shards)):
            apply_shard(ctx, plan, field, shard, lambda _: None)
    published = publish(ctx, plan)
    cleanup(ctx, plan)
    return published
