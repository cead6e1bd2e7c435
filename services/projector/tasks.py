"""Celery tasks of the projector, and the chord that chains them (`launch_projection`).

    chord([shard_stats(op, field, i) for every PCA table shard], fit(op))      # skipped if no PCA
      → chord([apply_shard(op, field, i) for every table shard], publish(op))

Each task: checks the operation is still live (a cancelled or failed operation's tasks exit as
IGNORED), counts its deliveries (a task whose worker keeps dying fails the operation with that
reason instead of looping), reports progress per chunk (operation store + `PROGRESS` result meta
with the worker pid), retries transient errors with exponential backoff, and on a permanent error
fails the operation with the error's code and discards the half-written student version.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task, chain, chord, shared_task
from celery.exceptions import Ignore

from services.common.operations import OperationRecord, OperationState, open_operation_store
from services.common.task_steps import OperationSteps, task_id
from services.common.settings import get_settings
from services.common.storage import CheckpointStore, open_object_store
from services.projector import pipeline
from services.projector.pipeline import ProjectionPlan, ProjectorContext, apply_unit, stats_unit

log = logging.getLogger(__name__)
STAGES = ("", "stats", "fit", "apply", "publish", "done")
TASK_PREFIX = "crossadapt.projector"


@lru_cache(maxsize=1)
def context() -> ProjectorContext:
    """Stores of this worker process (built after the fork: connections are not shared)."""
    settings = get_settings()
    return ProjectorContext(
        checkpoints=CheckpointStore(open_object_store(settings)),
        operations=open_operation_store(settings),
        chunk_rows=settings.shard_chunk_rows,
    )


def discard_outputs(ctx: ProjectorContext, plan: ProjectionPlan) -> None:
    """Best effort: delete the unpublished student files and the scratch of a failed/cancelled operation."""
    try:
        if plan.student_version:
            ctx.checkpoints.discard(plan.student_name, plan.student_version)
        pipeline.cleanup(ctx, plan)
    except Exception:  # the files are invisible without a manifest; cleanup failing is not fatal
        log.exception("could not discard outputs", extra={"operation_id": plan.operation_id})


STEPS: OperationSteps[ProjectionPlan] = OperationSteps(
    stages=STAGES,
    operations=lambda: context().operations,
    load_plan=lambda params: ProjectionPlan.model_validate(params["plan"]),
    discard=lambda plan: discard_outputs(context(), plan),
    not_ready=(pipeline.NotReadyError,),
)
ProjectorTask = STEPS.task_base()


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.shard_stats")
def shard_stats_task(self: Task, operation_id: str, unit: str, shards: list[tuple[str, int]]) -> int:
    """Covariance sums of one or more shards (small tables' shards share a task: one broker round trip)."""
    plan = STEPS.start(self, operation_id, unit, "stats")
    rows = 0
    for field, shard in shards:
        report = STEPS.reporter(self, operation_id, stats_unit(field, shard))
        rows += STEPS.run(self, lambda f=field, i=shard, r=report: pipeline.shard_stats(context(), plan, f, i, r))
    return rows


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.fit")
def fit_task(self: Task, operation_id: str) -> dict[str, str]:
    plan = STEPS.start(self, operation_id, "fit", "fit")
    kinds = STEPS.run(self, lambda: pipeline.fit(context(), plan))
    context().operations.set_progress(operation_id, "fit", 1.0)
    return kinds


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.apply_shard")
def apply_shard_task(self: Task, operation_id: str, unit: str, shards: list[tuple[str, int]]) -> list[str]:
    """Project one or more shards and write them to the student version (not yet published)."""
    plan = STEPS.start(self, operation_id, unit, "apply")
    digests = []
    for field, shard in shards:
        report = STEPS.reporter(self, operation_id, apply_unit(field, shard))
        digests.append(STEPS.run(self, lambda f=field, i=shard, r=report: pipeline.apply_shard(context(), plan, f, i, r)))
    if context().operations.get(operation_id).terminal:
        # Failed or cancelled while these shards were written: its discard may have listed the
        # version before the files existed, so remove them here (one of the two always does).
        discard_outputs(context(), plan)
        raise Ignore()
    return digests


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.publish")
def publish_task(self: Task, operation_id: str) -> dict[str, str]:
    """Publish the student manifest; from here on the operation can no longer be cancelled."""
    plan = STEPS.start(self, operation_id, "publish", "publish")
    ctx = context()
    published = STEPS.run(self, lambda: pipeline.publish(ctx, plan))
    result = {"name": published.name, "version": published.version}
    ctx.operations.set_progress(operation_id, "publish", 1.0)
    ctx.operations.transition(
        operation_id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED, stage="done", result=result
    )
    try:
        pipeline.cleanup(ctx, plan)
    except Exception:  # scratch left behind costs space, not correctness
        log.exception("could not clean up scratch", extra={"operation_id": operation_id})
    log.info("operation succeeded", extra={"operation_id": operation_id, "checkpoint": published.ref})
    return result


def group_shards(shards: list[tuple[str, int, int]], task_rows: int) -> list[list[tuple[str, int]]]:
    """Shards (field, index, rows) → task groups: a shard of ≥ task_rows rows is a task of its own;
    smaller ones are packed, in order, into tasks of up to task_rows rows, so a teacher with many
    small tables costs a few broker round trips instead of one per table."""
    groups: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    current_rows = 0
    for field, index, rows in shards:
        if rows >= task_rows:
            groups.append([(field, index)])
            continue
        if current and current_rows + rows > task_rows:
            groups.append(current)
            current, current_rows = [], 0
        current.append((field, index))
        current_rows += rows
    if current:
        groups.append(current)
    return groups


def _group_unit(kind: str, group: list[tuple[str, int]], index: int) -> str:
    """A single shard keeps its own unit (and task id); a packed group is `<kind>-group:NNNNN`."""
    if len(group) == 1:
        return (stats_unit if kind == "stats" else apply_unit)(*group[0])
    return f"{kind}-group:{index:05d}"


def build_workflow(app: Celery, plan: ProjectionPlan, task_rows: int | None = None,
                   from_stage: str = "") -> tuple[Any, list[str]]:
    """The canvas of one projection (its rest from `from_stage` on) and the ids of all its tasks
    (deterministic, for revoke)."""
    op = plan.operation_id
    task_rows = task_rows or get_settings().projection_task_rows

    def sig(name: str, unit: str, *args: Any) -> Any:
        return app.signature(f"{TASK_PREFIX}.{name}", args=(op, *args), immutable=True).set(task_id=task_id(op, unit))

    def grouped(name: str, kind: str, fields: list[str]) -> list[Any]:
        shards = [(f, i, s.rows) for f in fields for i, s in enumerate(plan.tables[f].shards)]
        return [sig(name, unit, unit, group) for index, group in enumerate(group_shards(shards, task_rows))
                for unit in [_group_unit(kind, group, index)]]

    stats = grouped("shard_stats", "stats", [f for f in plan.tables if plan.needs_stats(f)])
    applies = grouped("apply_shard", "apply", list(plan.tables))
    fit = sig("fit", "fit")
    publish = sig("publish", "publish")
    first = chord(stats, fit) if stats else fit
    ids = [s.id for s in (*stats, fit, *applies, publish)]
    rest = {"fit": chain(fit, chord(applies, publish)), "apply": chord(applies, publish), "publish": publish}
    return rest.get(from_stage, chain(first, chord(applies, publish))), ids


def resend(app: Celery, record: OperationRecord) -> None:
    """The stall watchdog's re-send: the workflow from the recorded stage on (every stage is idempotent)."""
    plan = ProjectionPlan.model_validate(record.params["plan"])
    build_workflow(app, plan, from_stage=record.stage)[0].apply_async()


def launch_projection(app: Celery, plan: ProjectionPlan) -> list[str]:
    """Send the projection's workflow to the broker; returns its task ids."""
    workflow, ids = build_workflow(app, plan)
    workflow.apply_async()
    return ids
